"""The PHI access log's writes on PostgreSQL: serialised among themselves (the seals need ids
visible in their order), never held off by VACUUM or ANALYZE of the table
(infrastructure/access_log.py)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from infrastructure.access_log import Access, AccessLog
from infrastructure.database import open_read_database
from tests.conftest import migrated_postgres

pytestmark = pytest.mark.postgres


_WAITING_ON_THE_LOG_LOCK = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND classid = 1146247233"
)


def _write_while_held(postgres_url: str, statement: str) -> tuple[bool, int, bool, int]:
    """Whether one entry was written within 2 s while another transaction holds what
    `statement` takes; how many sessions then waited for the log's advisory lock (a writer that
    is merely slow waits for none); whether it was written once that was released; the rows."""
    with migrated_postgres(postgres_url) as settings:
        db = open_read_database(settings)
        holder = psycopg.connect(settings.database_url)
        try:
            holder.execute(statement.format(schema=settings.postgres_schema))
            entry = Access("2026-12-03T12:00:00.000000Z", "ops", "GET", "/prescriptions", 200)
            writer = threading.Thread(target=AccessLog(db).write_now, args=(entry,), daemon=True)
            started = time.monotonic()
            writer.start()
            writer.join(timeout=2)
            while_held = not writer.is_alive() and time.monotonic() - started < 2
            with psycopg.connect(settings.database_url) as conn:
                (waiting,) = conn.execute(_WAITING_ON_THE_LOG_LOCK).fetchone()
            holder.rollback()
            writer.join(timeout=10)
            with psycopg.connect(settings.database_url) as conn:
                (rows,) = conn.execute(
                    f'SELECT count(*) FROM "{settings.postgres_schema}".drx_access_log'
                ).fetchone()
            return while_held, waiting, not writer.is_alive(), rows
        finally:
            holder.close()
            db.close()


def test_a_vacuum_of_the_access_log_holds_no_write_off(postgres_url):
    """VACUUM and ANALYZE hold SHARE UPDATE EXCLUSIVE while they run: a table lock in SHARE ROW
    EXCLUSIVE mode waited for each autovacuum, and for a VACUUM by hand as long as it ran."""
    found = _write_while_held(
        postgres_url, 'LOCK TABLE "{schema}".drx_access_log IN SHARE UPDATE EXCLUSIVE MODE'
    )
    assert found == (True, 0, True, 1)


def test_access_log_writes_still_wait_for_each_other(postgres_url):
    found = _write_while_held(
        postgres_url, "SELECT pg_advisory_xact_lock(1146247233, hashtext('{schema}'))"
    )
    assert found == (False, 1, True, 1)
