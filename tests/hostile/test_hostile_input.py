"""Hostile input on the webhook and the read API, on SQLite and on PostgreSQL: no 500, nothing
unsigned stored, only RFC 8259 JSON out, and no secret, key, signature or patient name in the
logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import time
import urllib.parse
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrastructure.migrations import migrate
from interfaces.logs import configure_logging
from tests.conftest import drop_schema, migrated_postgres, postgres_settings, sqlite_settings
from tests.helpers import (
    API_KEY,
    body_of,
    load_example,
    post_signed,
    serving,
    settle,
    signed_headers,
)

HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["v1,", "v1,AAAA", "v2,abc", " ", "1e9", "-1", "99999999999999999999"]),
)

# psycopg_pool's threads jitter a new connection's lifetime with the random module's global
# generator; when that happens while Hypothesis draws an example, it warns that a strategy used
# `random` (none of these does).
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def client(request, tmp_path_factory):
    """One service per store for the module (the fuzzing shares it)."""
    if request.param == "sqlite":
        chosen = sqlite_settings(tmp_path_factory.mktemp("hostile"))
        migrate(chosen)
        with serving(chosen, run_projections=False) as test_client:
            yield test_client
        return
    with (
        migrated_postgres(request.getfixturevalue("postgres_url")) as chosen,
        serving(chosen, run_projections=False) as test_client,
    ):
        yield test_client


def strict_json(text: str):
    """Parse as RFC 8259 JSON: NaN, Infinity and -Infinity are not JSON."""

    def refuse(constant):
        raise AssertionError(f"{constant} in a response body")

    return json.loads(text, parse_constant=refuse)


def stored_events(client) -> int:
    return client.app.state.parts.prescriptions.recorder.max_notification_id() or 0


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    webhook_id=HEADER_VALUES,
    timestamp=HEADER_VALUES,
    signature=HEADER_VALUES,
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x+json"]),
)
def test_unsigned_or_forged_requests_are_refused_and_store_nothing(
    client, body, webhook_id, timestamp, signature, content_type
):
    before = stored_events(client)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
        "content-type": content_type,
    }
    ascii_only = {k: v for k, v in headers.items() if v.isascii()}
    response = client.post("/webhooks/drx", content=body, headers=ascii_only)
    assert response.status_code in (401, 413), response.text
    assert stored_events(client) == before


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    payload=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    base=st.sampled_from(["received", "shipped", "on_hold", "renewal_approved"]),
)
def test_signed_garbage_gets_a_4xx_or_is_parked_never_a_500(client, payload, base):
    example = load_example(base)
    mutated = {
        **example,
        "id": f"evt_fuzz_{abs(hash(repr(payload)))}",
        "data": payload if isinstance(payload, dict) else example["data"],
    }
    if not isinstance(payload, dict):
        mutated["sequence"] = payload
    before = stored_events(client)
    seen = client.get(f"/deliveries/{urllib.parse.quote(mutated['id'], safe='')}").status_code
    response = post_signed(client, mutated)
    answer = strict_json(response.text)
    # Each answer means what it says: stored (as a fact, or parked with its reason), already
    # stored, or refused with nothing stored and the field named.
    if response.status_code == 202:
        assert stored_events(client) > before
        assert answer["event_id"] == mutated["id"]
        assert ("reason" in answer) == bool(answer.get("parked"))
    elif response.status_code == 200:
        assert seen == 200  # a duplicate only of what was stored before
        # The same payload under another base: another body for that id, kept as a conflict.
        kept = 1 if answer.get("conflict") else 0
        assert stored_events(client) == before + kept
    elif response.status_code == 400:  # json.dumps wrote an infinite float as Infinity
        assert "Infinity" in body_of(mutated).decode()
        assert answer["error"] == "not_a_json_object"
        assert stored_events(client) == before
    else:
        assert response.status_code == 422, response.text  # garbage in `sequence`, signed
        assert [p["field"] for p in answer["problems"]] == ["sequence"]
        assert stored_events(client) == before


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(hours=-2)])
def test_a_replayed_old_delivery_is_refused(client, skew):
    before = stored_events(client)
    response = post_signed(client, load_example("received"), skew=skew)
    assert response.status_code == 401
    assert stored_events(client) == before


def test_a_truncated_body_is_refused(client):
    body = body_of(load_example("received"))
    secrets = client.app.state.parts.settings.webhook_secrets
    before = stored_events(client)
    response = client.post(
        "/webhooks/drx", content=body[:-20], headers=signed_headers(body, *secrets)
    )
    assert response.status_code == 401
    assert stored_events(client) == before


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.text(max_size=30).map(lambda text: urllib.parse.quote(text, safe="")),
    query=st.dictionaries(
        st.sampled_from(
            ["status", "limit", "cursor", "as_of", "needs_review", "updated_since", "patient_id"]
        ),
        st.text(max_size=20) | st.sampled_from(["\x00", "0001-01-01T00:00:00+01:00", "9" * 30]),
        max_size=4,
    ),
)
def test_the_read_api_answers_any_path_and_query_without_a_500(client, path, query):
    for url in (
        f"/prescriptions/{path}",
        f"/prescriptions/{path}/history",
        "/prescriptions",
        f"/deliveries/{path}",
        "/deliveries",
    ):
        response = client.get(url, params=query)
        assert response.status_code < 500, (url, query, response.text)
        body = strict_json(response.text)
        if response.status_code >= 400:
            assert {"error", "detail"} <= body.keys() <= {"error", "detail", "problems"}, body
            for value in query.values():
                # An error never echoes a query value (a path id it may name: it was asked for).
                if len(value) >= 8 and value not in urllib.parse.unquote(path):
                    assert value not in response.text, (value, response.text)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def encrypted(request, tmp_path):
    """A new encrypted store on each database: its key, and its settings."""
    encryption_key = base64.b64encode(os.urandom(32)).decode()
    if request.param == "sqlite":
        chosen = sqlite_settings(tmp_path, encryption_key=encryption_key)
    else:
        chosen = postgres_settings(
            request.getfixturevalue("postgres_url"), encryption_key=encryption_key
        )
    migrate(chosen)
    yield encryption_key, chosen
    if chosen.dialect == "postgresql":
        drop_schema(chosen)


def test_no_secret_key_signature_or_patient_name_reaches_the_logs(encrypted, caplog):
    encryption_key, chosen = encrypted
    caplog.set_level(logging.DEBUG)
    with serving(chosen) as client:
        received = load_example("received")
        body = body_of(received)
        headers = signed_headers(body, *chosen.webhook_secrets)
        client.post("/webhooks/drx", content=body, headers=headers)
        client.post(
            "/webhooks/drx", content=body, headers={**headers, "webhook-signature": "v1,bad"}
        )
        broken = {
            **received,
            "id": "evt_broken",
            "data": {**received["data"], "patient": {"first_name": "Testy"}},
        }
        post_signed(client, broken)
        post_signed(client, {**received, "id": "evt_unknown", "type": "drx.prescription.nope"})
        bad_envelope = {**received, "occurred_at": "Testy McExample"}
        post_signed(client, bad_envelope)
        settle(client)
        client.get("/prescriptions", params={"patient_id": "drx_pt_TEST01"})
        client.get("/prescriptions", headers={"Authorization": "Bearer not-the-key"})
    text = caplog.text
    assert caplog.records, "nothing was logged at all: the test would prove nothing"
    for secret in (
        *chosen.webhook_secrets,
        API_KEY,
        encryption_key,
        "not-the-key",
        headers["webhook-signature"],
        "Testy",
        "McExample",
        "555-0100",
        "123 Example St",
    ):
        assert secret not in text, f"{secret[:8]}... reached the logs"


def stored_deliveries(client) -> int:
    return len(client.get("/deliveries", params={"limit": 500}).json()["items"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "drx_rx_\u0000"),
        ("id", "evt_\u0000"),
        ("type", "drx.prescription.shipped\u0000"),
    ],
)
def test_a_nul_character_in_an_envelope_field_is_a_422_and_stores_nothing(client, field, value):
    before = stored_events(client)
    response = post_signed(
        client, {**load_example("shipped"), "id": f"evt_nul_{field}", field: value}
    )
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["problems"]] == [field]
    assert stored_events(client) == before


def test_a_nul_character_in_data_is_parked_and_later_deliveries_still_reach_the_read_models(
    client,
):
    received = load_example("received")
    poisoned = {
        **received,
        "id": "evt_nul_data",
        "subject": "drx_rx_nul_data",
        "data": {
            **received["data"],
            "patient": {**received["data"]["patient"], "drx_patient_id": "drx_pt_\u0000"},
        },
    }
    answer = post_signed(client, poisoned)
    assert (answer.status_code, answer.json()["parked"]) == (202, True)
    assert "U+0000" in answer.json()["reason"]
    after = {**received, "id": "evt_after_nul", "subject": "drx_rx_after_nul"}
    assert post_signed(client, after).status_code == 202
    settle(client)
    assert client.get("/prescriptions/drx_rx_after_nul").status_code == 200
    assert client.get("/deliveries/evt_nul_data").json()["status"] == "parked"
    assert {row["lag"] for row in client.get("/projections").json()} == {0}
    assert client.get("/ready").json() == {"status": "ready"}


@pytest.mark.parametrize(
    "number", [b"1e999999", b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 400 + b".0"]
)
def test_a_number_that_is_not_finite_is_refused_at_intake(client, number):
    before = stored_events(client)
    body = body_of({**load_example("dispensed"), "id": "evt_not_finite"}).replace(
        b'"quantity_dispensed": 30', b'"quantity_dispensed": ' + number
    )
    assert b'quantity_dispensed": ' + number in body
    secrets = client.app.state.parts.settings.webhook_secrets
    response = client.post("/webhooks/drx", content=body, headers=signed_headers(body, *secrets))
    assert response.status_code == 400, response.text
    assert "finite" in response.json()["detail"]
    assert stored_events(client) == before


def test_a_validly_signed_body_that_is_not_utf8_is_a_400_not_a_401(client):
    before = stored_events(client)
    body = body_of(load_example("received")).replace(b"Testy", b"T\xffsty")
    secret = client.app.state.parts.settings.webhook_secrets[0]
    signature = base64.b64encode(
        hmac.new(
            base64.b64decode(secret.removeprefix("whsec_")),
            b"msg_raw." + str(int(time.time())).encode() + b"." + body,
            hashlib.sha256,
        ).digest()
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_raw",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + signature.decode(),
    }
    response = client.post("/webhooks/drx", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert stored_events(client) == before


def test_an_occurred_at_that_overflows_in_utc_is_a_422_naming_it(client):
    before = stored_events(client)
    payload = {
        **load_example("shipped"),
        "id": "evt_overflow",
        "occurred_at": "0001-01-01T00:00:00+01:00",
    }
    response = post_signed(client, payload)
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["problems"]] == ["occurred_at"]
    assert stored_events(client) == before


def test_a_data_instant_that_overflows_in_utc_parks_the_delivery_as_drx_data_not_our_fault(client):
    payload = load_example("shipped")
    payload = {
        **payload,
        "id": "evt_data_overflow",
        "data": {**payload["data"], "shipped_at": "9999-12-31T23:59:59-01:00"},
    }
    answer = post_signed(client, payload).json()
    assert answer["parked"] is True
    assert answer["reason"].startswith("data breaks the contract: data.shipped_at")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/prescriptions", {"updated_since": "0001-01-01T00:00:00+01:00"}),
        ("/prescriptions/drx_rx_7Q2M9K", {"as_of": "0001-01-01T00:00:00+01:00"}),
        ("/deliveries", {"cursor": str(2**70)}),
        ("/deliveries", {"cursor": "-1"}),
        ("/deliveries", {"cursor": "\u00b2"}),
        ("/prescriptions", {"cursor": "a\u0000"}),
        ("/prescriptions", {"updated_since": ""}),
        ("/prescriptions", {"patient_id": "drx_pt_\u0000"}),
        ("/prescriptions/drx_rx_%00", {}),
        ("/deliveries/evt_%00", {}),
    ],
)
def test_a_parameter_no_store_can_answer_is_a_400(client, path, params):
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_parameter"


def test_an_empty_cursor_is_the_first_page(client):
    assert client.get("/prescriptions", params={"cursor": ""}).status_code == 200


@pytest.mark.parametrize("subject", ["drx_rx_a/b", "drx_rx_100%", "drx_rx_a%2Fb", "drx_rx_ä b"])
def test_every_stored_prescription_is_readable_by_its_id(client, subject):
    event_id = f"evt_readable_{urllib.parse.quote(subject, safe='')}"
    payload = {**load_example("received"), "id": event_id, "subject": subject}
    assert post_signed(client, payload).status_code == 202
    settle(client)
    quoted = urllib.parse.quote(subject, safe="")
    detail = client.get(f"/prescriptions/{quoted}")
    assert (detail.status_code, detail.json()["prescription_id"]) == (200, subject)
    history = client.get(f"/prescriptions/{quoted}/history")
    assert history.json()["prescription_id"] == subject
    as_of = client.get(f"/prescriptions/{quoted}", params={"as_of": "2999-01-01T00:00:00Z"})
    assert as_of.json()["prescription_id"] == subject
    delivery = client.get(f"/deliveries/{urllib.parse.quote(event_id, safe='')}")
    assert delivery.json()["subject"] == subject


def test_a_control_character_in_a_logged_path_cannot_forge_a_log_line(client, monkeypatch):
    """A `%0a` in a request path reaches a log line (here: a fault while answering it); the
    line stays one line, and no forged record starts a line of its own."""
    stream = io.StringIO()
    configure_logging(stream)
    try:

        def fault(_prescription_id):
            raise RuntimeError("a fault while answering")

        monkeypatch.setattr(client.app.state.parts.queries, "prescription_json", fault)
        forged = "x\n2026-01-01 00:00:00,000 CRITICAL drx: forged\r\u2028also forged"
        response = client.get("/prescriptions/" + urllib.parse.quote(forged, safe=""))
        assert response.status_code == 500
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "drx", False)]:
            root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    (logged,) = [line for line in lines if "unhandled fault" in line]
    assert "x\\n2026-01-01 00:00:00,000 CRITICAL drx: forged\\r\\u2028also forged" in logged
    assert not [line for line in lines if line.startswith("2026-01-01")]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/prescriptions", {"GET"}),
        ("DELETE", "/webhooks/drx", {"POST"}),
        ("PUT", "/deliveries/evt_x/replay", {"POST"}),
    ],
)
def test_a_method_a_path_does_not_take_is_a_405_naming_the_ones_it_does(
    client, method, path, allowed
):
    response = client.request(method, path)
    assert response.status_code == 405
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}
    assert response.json()["error"] == "method_not_allowed"
