"""Scoped keys (DRX_API_KEYS entries and `drx keys create` ones) on every path, and the PHI
access log that the answers carrying patient data append to, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from infrastructure.api_keys import KeyRing
from tests.helpers import API_KEY, load_example, post_signed, serving, settle

READER, OPERATOR, AUDITOR = "drx_reader_key_0001", "drx_operator_key_0001", "drx_auditor_key_0001"
KEYS = (
    API_KEY,  # unnamed: all three scopes, named by its place
    f"reader:{READER}:read",
    f"operator:{OPERATOR}:operate",
    f"auditor:{AUDITOR}:audit+read",
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def scoped(settings):
    with serving(replace(settings, api_keys=KEYS)) as client:
        for name in ("received", "shipped"):
            assert post_signed(client, load_example(name), settings.webhook_secrets[0]).is_success
        settle(client)
        yield client


def entries(client, *, audits: bool = False, **filters):
    """The log's entries, by default without those of the auditor's own reads of it (each
    call of this makes one)."""
    client.app.state.parts.access_log.flush()
    answer = client.get("/audit/access", params=filters, headers=bearer(AUDITOR))
    assert answer.status_code == 200, answer.text
    found = answer.json()["items"]
    return found if audits else [e for e in found if not e["path"].startswith("/audit/")]


# (method, path, scope the path needs)
PATHS = [
    ("GET", "/prescriptions", "read"),
    ("GET", "/prescriptions/drx_rx_7Q2M9K", "read"),
    ("GET", "/prescriptions/drx_rx_7Q2M9K/history", "read"),
    ("GET", "/changes", "read"),
    ("GET", "/deliveries", "operate"),
    ("GET", "/deliveries/evt_example_shipped", "operate"),
    ("POST", "/deliveries/evt_example_shipped/replay", "operate"),
    ("GET", "/subscriptions", "operate"),
    ("GET", "/projections", "operate"),
    ("GET", "/audit/access", "audit"),
]
HOLDERS = {"read": {READER, AUDITOR}, "operate": {OPERATOR}, "audit": {AUDITOR}}


def test_each_path_needs_its_scope_and_answers_403_without_it(scoped):
    for method, path, scope in PATHS:
        for key in (READER, OPERATOR, AUDITOR):
            answer = scoped.request(method, path, headers=bearer(key))
            if key in HOLDERS[scope]:
                assert answer.status_code in (200, 409), (path, key, answer.text)  # 409: not parked
            else:
                assert answer.status_code == 403, (path, key, answer.status_code)
                assert answer.json()["error"] == "forbidden"
                assert scope in answer.json()["detail"]
        assert scoped.request(method, path, headers=bearer("drx_not_a_key")).status_code == 401
        assert scoped.request(method, path, headers=bearer(API_KEY)).status_code in (200, 409)


def test_a_read_key_gets_403_on_replay_and_subscriptions(scoped):
    assert scoped.post("/deliveries/x/replay", headers=bearer(READER)).status_code == 403
    created = scoped.post(
        "/subscriptions", json={"url": "http://127.0.0.1:9/x"}, headers=bearer(READER)
    )
    assert created.status_code == 403
    assert scoped.get("/subscriptions", headers=bearer(OPERATOR)).json() == []


def test_public_paths_need_no_key(scoped):
    for path in ("/health", "/ready", "/metrics", "/schema/openapi.json"):
        assert scoped.get(path, headers={"Authorization": ""}).status_code == 200, path


def test_every_answer_carrying_patient_data_is_logged_with_its_ids(scoped):
    scoped.get("/prescriptions", headers=bearer(READER))
    scoped.get("/prescriptions/drx_rx_7Q2M9K", headers=bearer(READER))
    scoped.get(
        "/prescriptions/drx_rx_7Q2M9K",
        params={"as_of": "2030-01-01T00:00:00Z"},
        headers=bearer(READER),
    )
    scoped.get("/prescriptions/drx_rx_7Q2M9K/history", headers=bearer(READER))
    scoped.get("/prescriptions/drx_rx_unknown", headers=bearer(READER))
    scoped.get("/changes", headers=bearer(READER))
    scoped.get("/deliveries/evt_example_shipped", headers=bearer(OPERATOR))
    scoped.get("/deliveries/evt_example_received", headers=bearer(OPERATOR))
    scoped.get("/deliveries", headers=bearer(OPERATOR))
    scoped.get("/projections", headers=bearer(OPERATOR))  # no patient data: not logged
    scoped.get("/prescriptions", headers=bearer("drx_not_a_key"))  # 401: no access
    found = [
        (e["key"], e["method"], e["path"], e["status"], e["prescription_ids"], e["patient_ids"])
        for e in entries(scoped)
    ]
    rx, pt = ["drx_rx_7Q2M9K"], ["drx_pt_TEST01"]
    assert found == [
        ("reader", "GET", "/prescriptions", 200, rx, pt),
        ("reader", "GET", "/prescriptions/drx_rx_7Q2M9K", 200, rx, pt),
        (
            "reader",
            "GET",
            "/prescriptions/drx_rx_7Q2M9K?as_of=2030-01-01T00%3A00%3A00Z",
            200,
            rx,
            pt,
        ),
        ("reader", "GET", "/prescriptions/drx_rx_7Q2M9K/history", 200, rx, pt),
        ("reader", "GET", "/prescriptions/drx_rx_unknown", 404, [], []),
        ("reader", "GET", "/changes", 200, rx, pt),
        ("operator", "GET", "/deliveries/evt_example_shipped", 200, rx, []),  # names no patient
        ("operator", "GET", "/deliveries/evt_example_received", 200, rx, pt),
        ("operator", "GET", "/deliveries", 200, rx, []),
    ]
    for entry in entries(scoped):
        assert set(entry) == {
            "at",
            "key",
            "method",
            "path",
            "status",
            "prescription_ids",
            "patient_ids",
        }
        assert "Testy" not in str(entry)  # ids only, never the patient's name


def test_reading_the_access_log_is_an_entry_carrying_the_ids_it_returned(scoped):
    scoped.get("/prescriptions/drx_rx_7Q2M9K", headers=bearer(READER))
    assert len(entries(scoped, patient_id="drx_pt_TEST01")) == 1
    assert entries(scoped, key="nobody") == []
    audits = [
        (e["key"], e["path"], e["status"], e["prescription_ids"], e["patient_ids"])
        for e in entries(scoped, audits=True, key="auditor")
    ]
    assert audits == [
        ("auditor", "/audit/access?patient_id=drx_pt_TEST01", 200, ["drx_rx_7Q2M9K"],
         ["drx_pt_TEST01"]),
        ("auditor", "/audit/access", 200, [], []),  # `key` is not kept: it may hold a key
    ]  # fmt: skip
    # and the next audit of that patient shows who audited them
    paths = [e["path"] for e in entries(scoped, audits=True, patient_id="drx_pt_TEST01")]
    assert paths == [
        "/prescriptions/drx_rx_7Q2M9K",
        "/audit/access?patient_id=drx_pt_TEST01",
        "/audit/access",
    ]


def test_an_entry_keeps_the_known_query_parameters_and_drops_any_other(scoped):
    scoped.get(
        "/prescriptions",
        params={"status": "shipped", "note": "Testy McExample called", "limit": "5"},
        headers=bearer(READER),
    )
    assert [e["path"] for e in entries(scoped)] == ["/prescriptions?status=shipped&limit=5"]


def test_the_access_log_is_queried_by_patient_prescription_key_and_time(scoped):
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    scoped.get("/prescriptions/drx_rx_7Q2M9K", headers=bearer(READER))
    scoped.get("/prescriptions/drx_rx_unknown", headers=bearer(AUDITOR))
    assert len(entries(scoped, patient_id="drx_pt_TEST01")) == 1
    assert len(entries(scoped, prescription_id="drx_rx_7Q2M9K")) == 1
    assert entries(scoped, prescription_id="drx_rx_other") == []
    assert [e["key"] for e in entries(scoped, key="auditor")] == ["auditor"]
    assert len(entries(scoped, since=before)) == 2
    assert entries(scoped, since="2999-01-01T00:00:00Z") == []
    first = scoped.get("/audit/access", params={"limit": 1}, headers=bearer(AUDITOR)).json()
    rest = scoped.get(
        "/audit/access", params={"cursor": first["next_cursor"]}, headers=bearer(AUDITOR)
    ).json()
    assert len(first["items"]) == 1
    assert [e["path"] for e in rest["items"] if not e["path"].startswith("/audit/")] == [
        "/prescriptions/drx_rx_unknown"
    ]
    bad = scoped.get("/audit/access", params={"since": "yesterday"}, headers=bearer(AUDITOR))
    assert bad.status_code == 400


def test_a_stored_key_works_at_once_and_a_revoked_one_is_refused_within_5_s(settings):
    with serving(settings) as client:
        store = client.app.state.parts.key_store
        key = store.create("app-one", ("read",))
        deadline = time.monotonic() + 5
        while client.get("/prescriptions", headers=bearer(key)).status_code != 200:
            assert time.monotonic() < deadline, "a new key was not accepted within 5 s"
            time.sleep(0.1)
        assert client.get("/deliveries", headers=bearer(key)).status_code == 403
        store.revoke("app-one")
        revoked_at = time.monotonic()
        while client.get("/prescriptions", headers=bearer(key)).status_code != 401:
            assert time.monotonic() - revoked_at < 5, "a revoked key was still accepted after 5 s"
            time.sleep(0.1)
        assert [k.name for k in store.listed()] == ["app-one"]
        assert store.listed()[0].revoked_at is not None


def test_the_store_keeps_only_a_hash_of_each_key(settings):
    with serving(settings) as client:
        parts = client.app.state.parts
        key = parts.key_store.create("app-two", ("read", "audit"))
        rows = parts.read_db.query("SELECT * FROM drx_api_keys")
        assert key not in str(rows)
        assert key.startswith("drx_")
        assert len(key) > 40


def test_a_ring_keeps_its_last_keys_while_the_store_cannot_be_read(settings):
    with serving(settings) as client:
        parts = client.app.state.parts
        key = parts.key_store.create("app-three", ("read",))
        ring = KeyRing([], parts.key_store, refresh_s=0.05)
        ring.start()
        try:
            assert ring.find(key) is not None

            def away():
                raise OSError("the database is away")

            parts.key_store.active = away  # type: ignore[method-assign]
            time.sleep(0.2)
            assert ring.find(key) is not None
        finally:
            ring.stop()


def test_a_keys_last_use_is_written_for_that_key_even_once_revoked(settings):
    """Written by hash: a use just before a revocation was lost (the write skipped revoked
    keys), and credited to a new key made under the same name before the next write."""
    with serving(settings) as client:
        parts = client.app.state.parts
        key = parts.key_store.create("rota", ("read",))
        ring = KeyRing([], parts.key_store)  # not started: driven by hand
        ring._reload()
        assert ring.find(key) is not None
        parts.key_store.revoke("rota")
        parts.key_store.create("rota", ("read",))
        ring.write_uses()
        used = {k.revoked_at is not None: k.last_used_at for k in parts.key_store.listed()}
        assert used[True] is not None  # the revoked key, used
        assert used[False] is None  # its successor, never


PUBLIC = ("/webhooks/drx", "/health", "/ready", "/metrics", "/schema", "/static/swagger-ui")
SCOPE_GUARDS = {"requires_read": "read", "requires_operate": "operate", "requires_audit": "audit"}


def test_every_path_but_the_public_ones_names_exactly_one_scope(scoped):
    """Over the app's own routes, so that a path added later without a scope fails here."""
    checked = 0
    for route in scoped.app.routes:
        if route.path.startswith(PUBLIC) or route.path.startswith("/console"):
            continue  # the console's pages check their session (tests/e2e/test_console.py)
        for handler in getattr(route, "route_handlers", ()):
            if "OPTIONS" in handler.http_methods and len(handler.http_methods) == 1:
                continue  # Litestar's automatic OPTIONS answer
            names = [getattr(g, "func", g).__name__ for g in handler.resolve_guards()]
            scopes = [SCOPE_GUARDS[name] for name in names if name in SCOPE_GUARDS]
            assert len(scopes) == 1, (route.path, sorted(handler.http_methods), scopes)
            checked += 1
    assert checked >= 25
