"""The fast path of GET /prescriptions/{id} and GET /prescriptions (interfaces/http/fast_reads.py)
against the framework's own answers: for each request, the same status, headers, body and
access log entry with the fast path as without it; and the plain requests answered by it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from infrastructure.access_log import AccessFilter
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from tests.conftest import migrated_postgres, sqlite_settings
from tests.helpers import (
    API_KEY,
    LIFECYCLES,
    load_example,
    load_lifecycle,
    post_signed,
    serving,
    settle,
)

READER, OPERATOR = "drx_reader_key_0001", "drx_operator_key_0001"
KEYS = (API_KEY, f"reader:{READER}:read", f"operator:{OPERATOR}:operate")


def bearer(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}")]


@contextmanager
def seeded(settings: Settings) -> Iterator[Any]:
    """A client on the app over `settings`, with every lifecycle delivered and projected."""
    with serving(replace(settings, api_keys=KEYS)) as client:
        for path in LIFECYCLES:
            for event in load_lifecycle(path)["events"]:
                assert post_signed(client, event).status_code == 202
        # A shipment after a cancellation: an anomaly, so that needs_review=true finds one.
        late = {
            **load_example("shipped"),
            "id": "evt_late_shipment",
            "subject": "drx_rx_LC0003",
            "occurred_at": "2030-01-01T00:00:00Z",
            "correlation": {"prescription_id": "drx_rx_LC0003"},
        }
        assert post_signed(client, late).status_code == 202
        assert post_signed(client, load_example("received")).status_code == 202
        settle(client)
        client.headers.pop("Authorization")
        yield client


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One seeded server per store for the module's tests: they only read, each comparing two
    answers and the access log's entries added meanwhile (seeding one per test was a tenth of
    the suite's time)."""
    if request.param == "sqlite":
        chosen = sqlite_settings(tmp_path_factory.mktemp("fast_reads"))
        migrate(chosen)
        with seeded(chosen) as client:
            yield client
        return
    with (
        migrated_postgres(request.getfixturevalue("postgres_url")) as chosen,
        seeded(chosen) as client,
    ):
        yield client


# Answered by the fast path: (path with its query, headers)
FAST = [
    "/prescriptions/drx_rx_7Q2M9K",
    "/prescriptions/drx_rx_LC0003",
    "/prescriptions",
    "/prescriptions?limit=2",
    "/prescriptions?limit=2&cursor=drx_rx_LC0002",
    "/prescriptions?cursor=",
    "/prescriptions?limit=500&cursor=drx_rx_LC0004",
    "/prescriptions?status=delivered",
    "/prescriptions?status=cancelled&limit=1",
    "/prescriptions?patient_id=drx_pt_TEST01",
    "/prescriptions?pharmacy_ncpdp_id=0000000&limit=100",
    "/prescriptions?needs_review=true",
    "/prescriptions?needs_review=false&cursor=drx_rx_LC0001",
    "/prescriptions?updated_since=2000-01-01T00%3A00%3A00Z",
    "/prescriptions?updated_since=2000-01-01T00:00:00%2B01:00&status=delivered",
    "/prescriptions?updated_since=2999-01-01T00%3A00%3A00Z",
    "/prescriptions?patient_id=drx_pt_nobody",
    "/prescriptions?patient_id=drx+pt%20%C3%A9",
    "/prescriptions?pharmacy_ncpdp_id=" + "9" * 200,
]
# Left to the framework: refused, read otherwise, or not found.
FRAMEWORK = [
    "/prescriptions/drx_rx_nobody",
    "/prescriptions/drx_rx_7Q2M9K?as_of=2030-01-01T00:00:00Z",
    "/prescriptions/drx_rx_7Q2M9K?as_of=yesterday",
    "/prescriptions/drx_rx_7Q2M9K?unknown=1",
    "/prescriptions/drx_rx_7Q2M9K/",
    "/prescriptions/drx_rx_7Q2M9K/history",
    "/prescriptions/",
    "/prescriptions/drx_rx_a%2Fb",
    "/prescriptions?limit=0",
    "/prescriptions?limit=501",
    "/prescriptions?limit=050",
    "/prescriptions?limit=%2B5",
    "/prescriptions?limit=many",
    "/prescriptions?limit=",
    "/prescriptions?needs_review=1",
    "/prescriptions?needs_review=True",
    "/prescriptions?needs_review=perhaps",
    "/prescriptions?status=lost",
    "/prescriptions?status=",
    "/prescriptions?status=sent&status=received",
    "/prescriptions?patient_id=",
    "/prescriptions?patient_id=" + "x" * 201,
    "/prescriptions?updated_since=yesterday",
    "/prescriptions?updated_since=2025-03-04T15:22:10",
    "/prescriptions?updated_since=0001-01-01T00:00:00%2B01:00",
    "/prescriptions?updated_since=",
    "/prescriptions?cursor=" + "x" * 201,
    "/prescriptions?note=Testy",
    "/prescriptions?limit=2&limit=3",
]
UNKEYED = [
    [],
    bearer("wrong-key"),
    [("Authorization", "Basic abc")],
    [("Authorization", "Bearer ")],
]


def entries(client) -> list[dict[str, Any]]:
    parts = client.app.state.parts
    parts.access_log.flush()
    found, _ = parts.access.find(AccessFilter(), 10_000, None)
    return [{k: v for k, v in entry.items() if k != "at"} for entry in found]


def answers(client, path: str, headers: list[tuple[str, str]], fast: bool) -> tuple[Any, ...]:
    """The answer to the request, with the fast path or without it, and the log's entries."""
    app = client.app
    kept, answered = app.fast_path, []

    async def counted(scope, send):
        answered.append(await kept(scope, send))
        return answered[-1]

    app.fast_path = counted if fast else None
    before = len(entries(client))
    try:
        response = client.get(path, headers=headers)
    finally:
        app.fast_path = kept
    return (
        response.status_code,
        response.headers.multi_items(),
        response.content,
        entries(client)[before:],
        answered == [True],
    )


def assert_same(client, path: str, headers: list[tuple[str, str]], *, fast: bool) -> None:
    *with_it, by_fast_path = answers(client, path, headers, fast=True)
    *without, _ = answers(client, path, headers, fast=False)
    assert with_it == without, path
    assert by_fast_path is fast, path


@pytest.mark.parametrize("path", FAST)
def test_a_plain_read_is_answered_by_the_fast_path_as_by_the_framework(served, path):
    assert_same(served, path, bearer(READER), fast=True)
    status, _, _, logged, _ = answers(served, path, bearer(API_KEY), fast=True)
    assert status == 200
    assert [e["key"] for e in logged] == ["DRX_API_KEYS[1]"]


@pytest.mark.parametrize("path", FRAMEWORK)
def test_a_request_it_does_not_read_plainly_is_the_frameworks(served, path):
    assert_same(served, path, bearer(READER), fast=False)


@pytest.mark.parametrize("headers", UNKEYED)
def test_no_valid_key_is_the_frameworks_401_and_no_entry(served, headers):
    for path in ("/prescriptions", "/prescriptions/drx_rx_7Q2M9K"):
        assert_same(served, path, headers, fast=False)
        assert answers(served, path, headers, fast=True)[0] == 401


def test_a_key_without_the_read_scope_or_given_twice_is_the_frameworks(served):
    for path in ("/prescriptions", "/prescriptions/drx_rx_7Q2M9K"):
        assert_same(served, path, bearer(OPERATOR), fast=False)
        assert answers(served, path, bearer(OPERATOR), fast=True)[0] == 403
        assert_same(served, path, bearer(READER) + bearer(READER), fast=False)


def test_other_methods_and_paths_are_the_frameworks(served):
    for method, path in (("POST", "/prescriptions"), ("HEAD", "/prescriptions/drx_rx_7Q2M9K")):
        assert served.request(method, path, headers=bearer(READER)).status_code == 405
    assert served.get("/health").json() == {"status": "ok"}


def test_while_the_access_log_refuses_the_framework_answers_503(served, monkeypatch):
    monkeypatch.setattr(
        type(served.app.state.parts.access_log), "accepting", property(lambda _: False)
    )
    assert_same(served, "/prescriptions/drx_rx_7Q2M9K", bearer(READER), fast=False)
    assert answers(served, "/prescriptions", bearer(READER), fast=True)[0] == 503


@pytest.mark.postgres
def test_a_fast_query_on_a_broken_connection_is_answered_by_the_framework(postgres_url):
    """A connection the server closed while idle (a restart, an idle timeout) fails its query;
    the framework's path answers that request, and the pool replaces the connection."""
    path = "/prescriptions/drx_rx_7Q2M9K"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        (started,) = admin.execute("SELECT clock_timestamp()").fetchone()  # type: ignore[misc]
    with migrated_postgres(postgres_url) as settings, seeded(settings) as served:
        for _ in range(3):  # the pool's connections in use
            assert served.get(path, headers=bearer(READER)).status_code == 200
        before = len(entries(served))
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            # This test's own connections: those opened since it started (a module's server
            # beside it, on another schema of the same database, keeps its own).
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'drx'"
                " AND pid <> pg_backend_pid() AND backend_start >= %s",
                (started,),
            )
        app, answered = served.app, []
        kept = app.fast_path

        async def counted(scope, send):
            answered.append(await kept(scope, send))
            return answered[-1]

        app.fast_path = counted
        try:
            for _ in range(5):
                assert served.get(path, headers=bearer(READER)).status_code == 200
                assert served.get("/prescriptions", headers=bearer(READER)).status_code == 200
        finally:
            app.fast_path = kept
        assert answered[0] is False  # its connection was gone: the framework answered
        assert answered[-2:] == [True, True]
        assert [e["status"] for e in entries(served)[before:]] == [200] * 10
