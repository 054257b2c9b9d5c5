"""The application recorders the service uses, on top of the library's:

- PostgreSQL fails fast when the database is unreachable. The library retries a failed statement
  10 times, each waiting up to the pool's timeout: about 20 s before a webhook could answer 503
  and DRx's own retry take over. Here a statement gets one more try after a short pause, enough
  to ride over a dropped connection, and then the error surfaces.
- Both load several aggregates' events in one query (`select_events_of`), so that a batch of
  deliveries costs one round trip to load instead of two per delivery, and tell which of several
  aggregates exist without reading their events (`existing`).
- PostgreSQL inserts the rows of a save as four plain arrays (ids, versions, topics, states)
  where the library sends one array of a composite row type: psycopg dumps that one in Python,
  about twice the CPU per row (measured 46 against 25 us), on the webhook's hot path. The table
  lock that keeps notification ids in commit order, and the rest, are the library's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

_fail_fast = retry((InterfaceError, OperationalError), max_attempts=2, wait=0.1)


def _undecorated(name: str) -> Any:
    return getattr(PostgresApplicationRecorder, name).__wrapped__


class FailFastPostgresApplicationRecorder(PostgresApplicationRecorder):
    insert_events = _fail_fast(_undecorated("insert_events"))
    select_events = _fail_fast(_undecorated("select_events"))
    select_notifications = _fail_fast(_undecorated("select_notifications"))
    max_notification_id = _fail_fast(_undecorated("max_notification_id"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The library's statement, with four plain arrays in place of one of a row type.
        self.insert_events_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
            " RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_events_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )

    @_fail_fast
    def existing(self, originator_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these aggregates have any stored event."""
        statement = SQL(
            "SELECT DISTINCT originator_id FROM {schema}.{table} WHERE originator_id = ANY(%s)"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(originator_ids),), prepare=True)
            return {row["originator_id"] for row in curs.fetchall()}

    @_fail_fast
    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of the given aggregates, by aggregate and version."""
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table}"
            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(originator_ids),), prepare=True)
            return [
                StoredEvent(
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]


class BatchSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of the given aggregates, by aggregate and version."""
        marks = ", ".join("?" * len(originator_ids))
        statement = (
            f"SELECT originator_id, originator_version, topic, state FROM {self.events_table_name}"  # noqa: S608
            f" WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in originator_ids])
            return [
                StoredEvent(
                    self.convert_originator_id(row["originator_id"]),
                    row["originator_version"],
                    row["topic"],
                    row["state"],
                )
                for row in cursor.fetchall()
            ]

    def existing(self, originator_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these aggregates have any stored event."""
        marks = ", ".join("?" * len(originator_ids))
        statement = (
            f"SELECT DISTINCT originator_id FROM {self.events_table_name}"  # noqa: S608
            f" WHERE originator_id IN ({marks})"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in originator_ids])
            return {UUID(row["originator_id"]) for row in cursor.fetchall()}
