"""The console over HTTP (a test client on the real app, both stores): sign-in and its
session, CSRF, a revoked key, expiry, the PHI access log, and the pages' actions."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from litestar.testing import TestClient

from domain.commands import ParkDelivery
from infrastructure.access_log import AccessFilter
from interfaces.http.app import create_app
from tests.helpers import command_for, load_example, post_signed

OPS_KEY = "drx_console_ops_key_0123456789"
READ_KEY = "drx_console_read_key_0123456789"
KEYS = (f"ops:{OPS_KEY}:operate+read", f"reader:{READ_KEY}:read")


@pytest.fixture
def console(settings) -> Iterator[TestClient]:
    app = create_app(replace(settings, api_keys=KEYS))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.state.parts.close()


def sign_in(client: TestClient, key: str = OPS_KEY):
    return client.post("/console/sign-in", data={"key": key}, follow_redirects=False)


def csrf_of(page: str) -> str:
    return html.unescape(re.search(r'name="csrf" value="([^"]+)"', page)[1])


def parked_shipment(client: TestClient) -> dict:
    """A received prescription, and its shipment parked (as a fault of ours had left it)."""
    parts = client.app.state.parts
    assert post_signed(client, load_example("received")).status_code == 202
    shipped = load_example("shipped")
    parts.intake.take(ParkDelivery(command_for(shipped).delivery, "test: our fault, fixed"))
    parts.projector.catch_up()
    return shipped


def test_a_page_without_a_session_sends_to_the_sign_in(console):
    for path in ("/console", "/console/parked", "/console/summary", "/console/live"):
        answer = console.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/sign-in"


def test_signing_in_sets_a_strict_http_only_session_cookie(console):
    answer = sign_in(console)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("drx_console=v1.")
    for flag in ("HttpOnly", "Path=/console", "SameSite=strict", "Max-Age=28800"):
        assert flag in cookie
    assert OPS_KEY not in cookie
    page = console.get("/console")
    assert page.status_code == 200
    assert "Overview" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_a_key_without_the_operate_scope_or_no_key_is_refused(console):
    refused = sign_in(console, READ_KEY)
    assert refused.status_code == 403
    assert "does not have the operate scope" in refused.text
    assert "set-cookie" not in refused.headers
    assert sign_in(console, "drx_not_a_key").status_code == 401
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_a_form_without_the_sessions_csrf_token_is_refused(console):
    sign_in(console)
    parts = console.app.state.parts
    subscription, _ = parts.subscriptions.create("http://127.0.0.1:9/hook")
    page = console.get("/console/subscriptions").text
    form = {"id": subscription.id, "state": "paused"}
    for token in (None, "forged", csrf_of(page)[:-1]):
        data = form if token is None else {**form, "csrf": token}
        answer = console.post("/console/subscriptions/state", data=data, follow_redirects=False)
        assert answer.status_code == 403, token
    from_elsewhere = console.post(
        "/console/subscriptions/state",
        data={**form, "csrf": csrf_of(page)},
        headers={"origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert from_elsewhere.status_code == 403
    assert parts.subscriptions.get(subscription.id).state == "active"
    done = console.post(
        "/console/subscriptions/state", data={**form, "csrf": csrf_of(page)}, follow_redirects=False
    )
    assert done.status_code == 303
    assert parts.subscriptions.get(subscription.id).state == "paused"
    rewound = console.post(
        "/console/subscriptions/rewind",
        data={"id": subscription.id, "after": "0", "csrf": csrf_of(page)},
    )
    assert "sends again after position 0" in rewound.text


def test_revoking_the_key_ends_its_sessions(console):
    parts = console.app.state.parts
    key = parts.key_store.create("night-shift", ("operate",))
    parts.keys._reload()  # what its thread does every second
    assert sign_in(console, key).status_code == 303
    assert console.get("/console").status_code == 200
    parts.key_store.revoke("night-shift")
    parts.keys._reload()
    assert console.get("/console", follow_redirects=False).headers["location"] == "/console/sign-in"


def test_a_new_key_under_a_revoked_ones_name_does_not_revive_its_sessions(console):
    parts = console.app.state.parts
    key = parts.key_store.create("rota", ("operate",))
    parts.keys._reload()
    sign_in(console, key)
    assert console.get("/console").status_code == 200
    parts.key_store.revoke("rota")
    parts.key_store.create("rota", ("operate",))  # the same name, another key
    parts.keys._reload()
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_a_session_expires(settings):
    app = create_app(replace(settings, api_keys=KEYS, console_session_s=1.0))
    try:
        with TestClient(app) as client:
            sign_in(client)
            assert client.get("/console").status_code == 200
            time.sleep(1.1)
            assert client.get("/console", follow_redirects=False).status_code == 303
    finally:
        app.state.parts.close()


def test_signing_out_ends_the_cookie(console):
    page = console.get("/console", follow_redirects=False)
    assert page.status_code == 303
    sign_in(console)
    overview = console.get("/console").text
    out = console.post(
        "/console/sign-out", data={"csrf": csrf_of(overview)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_a_copy_of_a_signed_out_cookie_is_refused_by_every_worker(console, settings):
    """Signing out ends the session, not only the browser's cookie: a copy taken before is
    refused by the worker that signed it out at once, and by another one (a second app on the
    same database) once it has reloaded."""
    other = create_app(replace(settings, api_keys=KEYS))
    try:
        with TestClient(other) as elsewhere:
            sign_in(console)
            copied = console.cookies["drx_console"]
            overview = console.get("/console").text
            elsewhere.cookies.set("drx_console", copied, path="/console")
            assert elsewhere.get("/console", follow_redirects=False).status_code == 200
            out = console.post("/console/sign-out", data={"csrf": csrf_of(overview)})
            assert out.status_code == 200  # back on the sign-in page
            thief = TestClient(console.app)
            thief.cookies.set("drx_console", copied, path="/console")
            assert thief.get("/console", follow_redirects=False).status_code == 303
            other.state.parts.sign_outs._reload()
            assert elsewhere.get("/console", follow_redirects=False).status_code == 303
            # a session signed in afterwards is another one, and is on
            sign_in(console)
            assert console.get("/console", follow_redirects=False).status_code == 200
    finally:
        other.state.parts.close()


def test_a_sign_out_the_database_cannot_record_keeps_the_session(console, monkeypatch):
    sign_in(console)
    overview = console.get("/console").text
    parts = console.app.state.parts

    def away(*_: object) -> None:
        raise ConnectionError("the database is away")

    monkeypatch.setattr(parts.read_db, "transaction", away)
    failed = console.post("/console/sign-out", data={"csrf": csrf_of(overview)})
    assert failed.status_code >= 500
    assert "set-cookie" not in failed.headers
    assert console.get("/console", follow_redirects=False).status_code == 200


def test_dry_run_then_replay_of_a_parked_group(console):
    shipped = parked_shipment(console)
    sign_in(console)
    parked = console.get("/console/parked").text
    assert "test: our fault, fixed" in parked
    dry = console.get("/console/dry-run", params={"reason": "test: our fault, fixed"}).text
    assert "processed" in dry
    assert "received</code> → <code>shipped" in dry
    ids = html.unescape(re.search(r'name="ids" value="([^"]+)"', dry)[1])
    assert console.app.state.parts.prescriptions.delivery(shipped["id"]).is_parked
    replayed = console.post("/console/replay", data={"ids": ids, "csrf": csrf_of(dry)})
    assert replayed.status_code == 200
    assert "processed" in replayed.text
    assert not console.app.state.parts.prescriptions.delivery(shipped["id"]).is_parked
    assert console.post("/console/replay", data={"ids": ids}).status_code == 403


def test_the_pages_that_carry_patient_data_are_in_the_access_log(console):
    shipped = parked_shipment(console)
    sign_in(console)
    subject = shipped["subject"]
    for path, params in (
        ("/console/prescription", {"id": subject}),
        ("/console/delivery", {"id": shipped["id"]}),
        ("/console/prescriptions", {"by": "patient", "q": "drx_pt_TEST01"}),
        ("/console/prescription/history", {"id": subject}),
        ("/console/prescription/fhir", {"id": subject}),
    ):
        assert console.get(path, params=params).status_code == 200, path
    parts = console.app.state.parts
    parts.access_log.flush()
    entries, _ = parts.access.find(AccessFilter(key="ops"), 100, None)
    paths = {entry["path"].split("?")[0]: entry for entry in entries}
    for path in paths.keys() - {"/console/sign-in"}:
        assert paths[path]["prescription_ids"] == [subject], path
    for path in ("/console/prescription", "/console/prescriptions", "/console/prescription/fhir"):
        assert paths[path]["patient_ids"] == ["drx_pt_TEST01"], path
    assert paths["/console/delivery"]["patient_ids"] == []  # the shipment names no patient
    assert "/console" not in paths  # the overview carries no patient data


def test_a_prescriptions_page_shows_its_timeline_requests_and_chain(console):
    sign_in(console)
    for name in ("shipped", "received", "change_requested"):  # the shipment arrives first
        assert post_signed(console, load_example(name)).status_code == 202
    console.app.state.parts.projector.catch_up()
    found = console.get(
        "/console/prescriptions", params={"by": "prescription", "q": "drx_rx_7Q2M9K"}
    )
    assert found.url.path == "/console/prescription"
    page = found.text
    timeline = page[page.index('<ol class="timeline"') :]
    in_fact_order = re.findall(r"<strong>(drx\.prescription\.\w+)</strong>", timeline)
    assert in_fact_order == [
        "drx.prescription.received",
        "drx.prescription.change_requested",
        "drx.prescription.shipped",
    ]
    assert "arrived 1st" in timeline
    assert timeline.count("arrived out of order") == 3
    assert "chg_" in page
    assert "Age against the SLA" in page
    assert "intact" in page
    assert page.count("signature verified") == 3
    unknown = console.get("/console/prescription", params={"id": "drx_rx_nope"})
    assert unknown.status_code == 404
    assert "no prescription with id drx_rx_nope" in unknown.text


def test_the_overview_charts_the_intake_of_the_last_hour(console):
    post_signed(console, load_example("received"))
    post_signed(console, load_example("received"))
    console.post("/webhooks/drx", content=b"{}", headers={"content-type": "application/json"})
    console.app.state.parts.intake_tally.flush()
    sign_in(console)
    page = console.get("/console").text
    assert "accepted 1, duplicate 1, parked 0, refused 1" in page
    assert "<svg" in page
    assert 'role="img"' in page


def test_what_deliveries_say_is_escaped(console):
    parts = console.app.state.parts
    hostile = {**load_example("received"), "id": "evt_<b>bold</b>", "subject": "drx_rx_<i>x</i>"}
    reason = '<script>alert("parked")</script>'
    parts.intake.take(ParkDelivery(command_for(hostile).delivery, reason))
    parts.projector.catch_up()
    sign_in(console)
    for path, params in (
        ("/console/parked", {}),
        ("/console/parked/group", {"reason": reason}),
        ("/console/delivery", {"id": hostile["id"]}),
        ("/console/dry-run", {"reason": reason}),
    ):
        page = console.get(path, params=params).text
        assert "<script>alert" not in page, path
        assert "<b>bold" not in page, path
        assert "<i>x" not in page, path
        assert "&lt;script&gt;alert" in page or "&lt;b&gt;bold" in page, path
