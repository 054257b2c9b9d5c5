"""Fixtures shared by the tiers: stores on real SQLite files and a real PostgreSQL.

PostgreSQL tests use a database created for this run (and dropped after it), with one schema per
test. When no server is reachable they are skipped, except under CI=true, where that is a failure.
Point them elsewhere with DRX_TEST_POSTGRES_URL (an admin connection to any existing database).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from bench import pgcluster
from domain.application import Prescriptions
from domain.unit_of_work import Intake
from infrastructure.database import ReadDatabase
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.bootstrap import Parts, bootstrap
from tests.helpers import API_KEY, new_secret

TIERS = ("unit", "integration", "e2e", "contract", "hostile", "faults")


# The tests whose bounds are times (a recovery within seconds, a stream's heartbeat gaps, a
# dispatcher's back-off, a burst still running when a client leaves): marked `serial`, they run
# after the rest has run in parallel (the README's test command), three files at a time, where
# the parallel tier's load would stretch their clocks. Most of them wait more than they compute
# (about 0.8 of a core for three); the fault tier's constant load is the exception, and its
# bounds (recovery within 5 s) held beside the others in each of the runs tried (four on
# 2026-12-01, 65-77 s in all). These files whole; elsewhere `@pytest.mark.serial`.
SERIAL = (
    "tests/faults/",
    "tests/e2e/test_change_stream.py",
    "tests/e2e/test_console_browser.py",
    "tests/e2e/test_subscriptions.py",
    "tests/integration/test_dispatcher.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder it lives in: `pytest -m unit` runs the
    milliseconds-only tier, `-m "not faults"` leaves out the one that stops databases; and the
    timing-bound ones `serial`."""
    root = Path(__file__).resolve().parent.parent
    for item in items:
        path = Path(str(item.fspath))
        tier = path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if str(path.relative_to(root)).startswith(SERIAL):
            item.add_marker(pytest.mark.serial)


ADMIN_URL = os.environ.get("DRX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test run, as a URL; dropped at the end."""
    try:
        admin = _admin_connect()
    except psycopg.OperationalError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but PostgreSQL is unreachable at {ADMIN_URL}: {error}")
        pytest.skip(f"PostgreSQL unreachable at {ADMIN_URL}")
    name = f"drx_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        # A test's commits need not wait for the disk: nothing here outlives the run.
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    user = info.get("user") or "postgres"
    password = f":{info['password']}" if info.get("password") else ""
    host, port = info.get("host") or "127.0.0.1", info.get("port") or 5432
    yield f"postgresql://{user}{password}@{host}:{port}/{name}"
    with _admin_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[pgcluster.PrivateCluster]:
    """A PostgreSQL cluster of the run's own (initdb and pg_ctl on a free port), for tests that
    stop it, cut it off or change its settings: the machine's server is never touched."""
    if not pgcluster.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but initdb and pg_ctl are not available for a private cluster")
        pytest.skip("initdb and pg_ctl are not available")
    with pgcluster.private_cluster() as cluster:
        yield cluster


def postgres_settings(url: str, **overrides: object) -> Settings:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return Settings(
        database_url=url,
        postgres_schema=schema,
        postgres_pool_size=2,
        webhook_secrets=(new_secret(),),
        api_keys=(API_KEY,),
        **overrides,
    )  # type: ignore[arg-type]


def sqlite_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'drx.sqlite3'}",
        webhook_secrets=(new_secret(),),
        api_keys=(API_KEY,),
        **overrides,
    )  # type: ignore[arg-type]


def drop_schema(settings: Settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{settings.postgres_schema}" CASCADE')


# What a schema is made of, so that one given back after a test is known to be as migrated:
# its tables, columns, indexes, constraints, triggers, functions, settings and privileges, and
# the migrations it records, the schema's own name left out. (Its rows are emptied; its
# statistics are not kept apart.)
_FINGERPRINT = """
SELECT md5(string_agg(replace(item, %(schema)s::text, '~'), ',' ORDER BY item)) FROM (
    SELECT 'c:' || c.relname || ':' || c.relkind::text || ':' || coalesce(c.reloptions::text, '')
        || ':' || coalesce(c.relacl::text, '') || ':' || coalesce((
            SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                || a.attnotnull::text || coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
                ';' ORDER BY a.attnum)
            FROM pg_attribute a LEFT JOIN pg_attrdef d
                ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
    FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace
    UNION ALL SELECT 'i:' || pg_get_indexdef(i.indexrelid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = %(schema)s::regnamespace
    UNION ALL SELECT 'k:' || conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = %(schema)s::regnamespace
    UNION ALL SELECT 't:' || t.tgname || ':' || t.tgenabled::text || ':' || pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(schema)s::regnamespace
    UNION ALL SELECT 'p:' || p.oid::regprocedure::text || ':' || md5(p.prosrc) || ':'
        || coalesce(p.proconfig::text, '') FROM pg_proc p
        WHERE p.pronamespace = %(schema)s::regnamespace
    UNION ALL SELECT 'm:' || version || ':' || checksum FROM {schema}.drx_schema_migrations
) AS parts(item)
"""
# Migrated schemas given back by finished tests, by database, to be emptied and used again:
# migrating one costs 0.6 s, emptying it 30 ms (a third of the suite's time went to migrations).
_SCHEMAS: dict[str, list[str]] = {}
_MIGRATED: dict[str, str] = {}  # the fingerprint of a schema as migrated, by database


def _fingerprint(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> str:
    query = _FINGERPRINT.replace("{schema}", f'"{schema}"')
    row = conn.execute(query, {"schema": schema}).fetchone()  # type: ignore[arg-type]
    return str(row[0]) if row else ""


def _give_back(settings: Settings) -> None:
    """Empty the schema (rows and sequences) and keep it for the next test, if it is still as
    migrated; else drop it. A schema that cannot be emptied at once (a connection of the test
    still holds a lock on it) is left to the end of the run, which drops the database."""
    url, schema = settings.database_url, settings.postgres_schema
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            if _fingerprint(conn, schema) != _MIGRATED.get(url):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                return
            conn.execute("SET lock_timeout = '5s'")
            tables = conn.execute(
                "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables"
                " WHERE schemaname = %s AND tablename <> 'drx_schema_migrations'",
                (schema,),
            ).fetchall()
            conn.execute(f"TRUNCATE {', '.join(str(t[0]) for t in tables)} RESTART IDENTITY")
            for (sequence,) in conn.execute(
                "SELECT format('%%I.%%I', schemaname, sequencename) FROM pg_sequences"
                " WHERE schemaname = %s",
                (schema,),
            ).fetchall():
                conn.execute(f"ALTER SEQUENCE {sequence} RESTART")
    except psycopg.Error:
        return
    _SCHEMAS.setdefault(url, []).append(schema)


@contextmanager
def migrated_postgres(url: str) -> Iterator[Settings]:
    """A migrated, empty schema in the run's database (one a finished test gave back, emptied,
    or a new one); given back afterwards."""
    chosen = postgres_settings(url)
    kept = _SCHEMAS.get(url)
    if kept:
        chosen = replace(chosen, postgres_schema=kept.pop())
    else:
        migrate(chosen)
        if url not in _MIGRATED:
            with psycopg.connect(url, autocommit=True) as conn:
                _MIGRATED[url] = _fingerprint(conn, chosen.postgres_schema)
    try:
        yield chosen
    finally:
        _give_back(chosen)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Migrated settings on each store: a new SQLite file, or an empty migrated PostgreSQL
    schema (`migrated_postgres`)."""
    if request.param == "sqlite":
        chosen = sqlite_settings(tmp_path)
        migrate(chosen)
        yield chosen
        return
    with migrated_postgres(request.getfixturevalue("postgres_url")) as chosen:
        yield chosen


@pytest.fixture
def parts(settings: Settings) -> Iterator[Parts]:
    """The service's parts over the test's store, from the one bootstrap."""
    with bootstrap(settings) as built:
        yield built


@pytest.fixture
def read_db(parts: Parts) -> ReadDatabase:
    return parts.read_db


@pytest.fixture
def prescriptions(parts: Parts) -> Prescriptions:
    return parts.prescriptions


@pytest.fixture
def intake(parts: Parts) -> Intake:
    return parts.intake
