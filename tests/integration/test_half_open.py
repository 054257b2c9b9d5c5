"""Every PostgreSQL connection of the service is bounded on a network that drops it silently
(`infrastructure.database.HALF_OPEN_BOUND`): the event store's pool (the library's, tuned by our
recorder before the library's constructor opens it), the read database's pool, the web worker's
asyncio pool, and every connection made from `postgres_conninfo` (the change hub's LISTEN
connection, migrations, the audit's reads, the lead's)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from infrastructure.database import HALF_OPEN_BOUND, connect_postgres
from interfaces.bootstrap import bootstrap
from tests.conftest import migrated_postgres

pytestmark = pytest.mark.postgres


def _bounds(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> dict[str, str]:
    made = psycopg.conninfo.conninfo_to_dict(conn.info.dsn)
    return {name: str(made.get(name)) for name in HALF_OPEN_BOUND}


def test_every_pool_makes_its_connections_with_the_half_open_bound(postgres_url):
    expected = {name: str(value) for name, value in HALF_OPEN_BOUND.items()}
    with migrated_postgres(postgres_url) as settings, bootstrap(settings) as parts:
        with parts.prescriptions.recorder.datastore.pool.connection() as conn:  # type: ignore[attr-defined]
            assert _bounds(conn) == expected
        with parts.read_db._pool.connection() as conn:  # type: ignore[attr-defined]
            assert _bounds(conn) == expected

        async def asynchronously() -> dict[str, str]:
            await parts.async_read_db.start()
            try:
                async with parts.async_read_db._pool.connection() as conn:  # type: ignore[attr-defined]
                    return _bounds(conn)
            finally:
                await parts.async_read_db.stop()

        assert asyncio.run(asynchronously()) == expected


def test_a_connection_of_its_own_is_made_with_the_half_open_bound(postgres_url):
    """A LISTEN connection on a dropped network never raises without it: its streams would fall
    back to polling for good instead of listening again."""
    expected = {name: str(value) for name, value in HALF_OPEN_BOUND.items()}
    with migrated_postgres(postgres_url) as settings, connect_postgres(settings) as conn:
        assert _bounds(conn) == expected
