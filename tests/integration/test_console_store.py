"""What the console keeps in the database, on both stores: the sessions' shared secret, and the
webhook's intake by minute added up from several workers."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

from infrastructure.console_secret import console_secret
from infrastructure.intake_tally import IntakeTally


def test_every_process_gets_the_one_secret(read_db):
    first = console_secret(read_db)
    assert len(first) == 32
    assert console_secret(read_db) == first  # a second process reads the first one's
    key = base64.b64encode(os.urandom(32)).decode()
    derived = console_secret(read_db, key)
    assert derived != first
    assert derived == console_secret(read_db, key)


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def test_two_workers_counts_add_up_by_minute(read_db):
    clock = Clock(datetime(2025, 3, 4, 15, 22, 30, tzinfo=UTC))
    one, two = IntakeTally(read_db, now=clock), IntakeTally(read_db, now=clock)
    for outcome in ("accepted", "accepted", "duplicate", "invalid_signature"):
        one.count(outcome, 0.004)
    two.count("accepted", 0.02)
    two.count("conflict", 0.02)
    one.flush()
    two.flush()
    clock.moment += timedelta(minutes=1)
    one.count("parked", 0.2)
    one.flush()
    one.flush()  # nothing new: nothing added twice

    intake = one.last_minutes(3)

    assert [m.minute for m in intake.minutes] == [
        "2025-03-04T15:21Z",
        "2025-03-04T15:22Z",
        "2025-03-04T15:23Z",
    ]
    assert intake.minutes[0].counts == {"accepted": 0, "duplicate": 0, "parked": 0, "refused": 0}
    assert intake.minutes[1].counts == {"accepted": 3, "duplicate": 2, "parked": 0, "refused": 1}
    assert intake.minutes[2].counts == {"accepted": 0, "duplicate": 0, "parked": 1, "refused": 0}
    assert intake.latency_buckets == {0.005: 4, 0.025: 2, 0.25: 1}
    assert 0.1 < intake.latency_quantile(0.99) <= 0.25


def test_old_minutes_are_pruned(read_db):
    clock = Clock(datetime(2025, 3, 4, 12, 0, tzinfo=UTC))
    tally = IntakeTally(read_db, now=clock)
    tally.count("accepted", 0.001)
    tally.flush()
    clock.moment += timedelta(hours=3)
    tally._pruned_at = 0.0  # a minute has passed since the last pruning
    tally.count("accepted", 0.001)
    tally.flush()
    rows = read_db.query("SELECT DISTINCT minute FROM drx_intake_minutes")
    assert [row[0] for row in rows] == ["2025-03-04T15:00Z"]
