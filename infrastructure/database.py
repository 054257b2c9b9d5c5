"""Plain connections to the configured database, for migrations and health checks."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

from infrastructure.settings import Settings

# How long a pool keeps trying to replace one lost connection before it gives the slot up, to
# be tried afresh by the next request that waits. psycopg_pool's default, 5 minutes, with a
# back-off that doubles from 1 s without a cap, left a pool whose connections died in a long
# outage waiting up to a minute before its next attempt once the database was back.
RECONNECT_TIMEOUT_S = 2.0


def tune_pool(pool: psycopg_pool.ConnectionPool[Any], connect_timeout_s: float) -> None:
    """Make a pool recover within seconds of the database coming back: short reconnection
    attempts, and a connect timeout for each (an unreachable host, not only a refused port,
    fails the attempt instead of hanging for the kernel's TCP timeout)."""
    pool.reconnect_timeout = RECONNECT_TIMEOUT_S
    if isinstance(pool.kwargs, dict):
        pool.kwargs.setdefault("connect_timeout", max(1, round(connect_timeout_s)))


def postgres_conninfo(settings: Settings) -> str:
    pg = settings.postgres
    return psycopg.conninfo.make_conninfo(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password or None,
        dbname=pg.dbname,
        connect_timeout=settings.postgres_connect_timeout_s,
        application_name="drx",
    )


@contextmanager
def connect_postgres(settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection whose unqualified names resolve in the configured schema."""
    with psycopg.connect(postgres_conninfo(settings), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.postgres_schema}"')
        yield conn


PRIVATE = 0o600


def create_private(path: Path) -> None:
    """Create the file readable and writable by its owner only, unless it exists. SQLite gives
    the database's WAL and shared-memory files the database file's permissions, so creating the
    database this way keeps all three private (they hold patient data)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))


@contextmanager
def connect_sqlite(settings: Settings) -> Iterator[sqlite3.Connection]:
    path = Path(settings.sqlite_path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    create_private(path)
    conn = sqlite3.connect(
        settings.sqlite_path, isolation_level=None, timeout=settings.sqlite_lock_timeout_s
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        yield conn
    finally:
        conn.close()


def postgres_warnings(settings: Settings) -> list[str]:
    """Server settings that hurt this service, each as a sentence for the log."""
    if settings.dialect != "postgresql":
        return []
    with connect_postgres(settings) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    if row is not None and row[0] == "off":
        return [
            "PostgreSQL runs with autovacuum off: without ANALYZE the planner has no statistics "
            "and each lookup by id scans the whole events table as the store grows (measured: "
            "118 deliveries/s at a million facts instead of 900); run VACUUM ANALYZE regularly"
        ]
    return []
