"""The PostgreSQL application recorder, failing fast when the database is unreachable.

The library retries a failed statement 10 times, each waiting up to the pool's timeout: about 20 s
before a webhook could answer 503 and DRx's own retry take over. Here a statement gets one more
try after a short pause, enough to ride over a dropped connection, and then the error surfaces.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry

_fail_fast = retry((InterfaceError, OperationalError), max_attempts=2, wait=0.1)


def _undecorated(name: str) -> Any:
    return getattr(PostgresApplicationRecorder, name).__wrapped__


class FailFastPostgresApplicationRecorder(PostgresApplicationRecorder):
    insert_events = _fail_fast(_undecorated("insert_events"))
    select_events = _fail_fast(_undecorated("select_events"))
    select_notifications = _fail_fast(_undecorated("select_notifications"))
    max_notification_id = _fail_fast(_undecorated("max_notification_id"))
