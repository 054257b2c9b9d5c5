"""Hostile input on the webhook and the read API: no 500, nothing unsigned stored, and no secret,
key, signature or patient name in the logs."""

from __future__ import annotations

import base64
import logging
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import sqlite_settings
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


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    chosen = sqlite_settings(tmp_path_factory.mktemp("hostile"))
    from infrastructure.migrations import migrate

    migrate(chosen)
    with serving(chosen, run_projections=False) as test_client:
        yield test_client


def stored_events(client) -> int:
    return client.app.state.services.prescriptions.recorder.max_notification_id() or 0


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
    response = post_signed(client, mutated)
    assert response.status_code in (200, 202, 400, 422), response.text


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(hours=-2)])
def test_a_replayed_old_delivery_is_refused(client, skew):
    before = stored_events(client)
    response = post_signed(client, load_example("received"), skew=skew)
    assert response.status_code == 401
    assert stored_events(client) == before


def test_a_truncated_body_is_refused(client):
    body = body_of(load_example("received"))
    secrets = client.app.state.services.settings.webhook_secrets
    response = client.post(
        "/webhooks/drx", content=body[:-20], headers=signed_headers(body, *secrets)
    )
    assert response.status_code == 401


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?/%"),
        max_size=30,
    ),
    query=st.dictionaries(
        st.sampled_from(
            ["status", "limit", "cursor", "as_of", "needs_review", "updated_since", "patient_id"]
        ),
        st.text(max_size=20),
        max_size=4,
    ),
)
def test_the_read_api_answers_any_path_and_query_without_a_500(client, path, query):
    for url in (f"/prescriptions/{path}", "/prescriptions", f"/deliveries/{path}", "/deliveries"):
        response = client.get(url, params=query)
        assert response.status_code < 500, (url, query, response.text)


def test_no_secret_key_signature_or_patient_name_reaches_the_logs(tmp_path, caplog):
    encryption_key = base64.b64encode(os.urandom(32)).decode()
    chosen = sqlite_settings(tmp_path, encryption_key=encryption_key)
    from infrastructure.migrations import migrate

    migrate(chosen)
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
