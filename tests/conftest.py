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
# after the rest has run in parallel (the README's test command), one file at a time beside one
# other, and the fault tier alone, so that other tests' load does not stretch their clocks. These
# files whole; elsewhere `@pytest.mark.serial`.
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


@contextmanager
def migrated_postgres(url: str) -> Iterator[Settings]:
    """A new, migrated schema in the run's database; dropped afterwards."""
    chosen = postgres_settings(url)
    migrate(chosen)
    try:
        yield chosen
    finally:
        drop_schema(chosen)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Migrated settings on each store: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        chosen = sqlite_settings(tmp_path)
    else:
        chosen = postgres_settings(request.getfixturevalue("postgres_url"))
    migrate(chosen)
    yield chosen
    if chosen.dialect == "postgresql":
        drop_schema(chosen)


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
