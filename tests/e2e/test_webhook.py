"""POST /webhooks/drx through the HTTP app, signed with the standardwebhooks library."""

from __future__ import annotations

import json
import logging
import random
from datetime import timedelta

import pytest

from tests.helpers import (
    EXAMPLES,
    LIFECYCLES,
    body_of,
    load_example,
    load_lifecycle,
    metric,
    new_secret,
    post_signed,
    serving,
    settle,
    signed_headers,
    state_subset,
)

URL = "/webhooks/drx"


def stored_events(client) -> int:
    return client.app.state.parts.prescriptions.recorder.max_notification_id() or 0


def test_a_signed_delivery_is_accepted_once_stored_and_a_repeat_is_a_duplicate(client):
    payload = load_example("received")
    first = post_signed(client, payload)
    assert (first.status_code, first.json()) == (
        202,
        {"status": "accepted", "event_id": "evt_example_received"},
    )
    again = post_signed(client, {**payload, "attempt": 2, "sent_at": "2025-03-04T16:00:00Z"})
    assert (again.status_code, again.json()) == (
        200,
        {"status": "duplicate", "event_id": "evt_example_received"},
    )
    settle(client)
    state = client.get("/prescriptions/drx_rx_7Q2M9K").json()
    assert (state["status"], state["version"], state["provisional"]) == ("received", 1, False)


def test_every_example_payload_is_accepted(client):
    """Each example's bytes as the contract gives them, one after another on one store (one
    app to start): each is a fact of its own (ids differ), accepted whatever came before."""
    for path in EXAMPLES:
        response = post_signed(client, path.read_bytes())
        assert response.status_code == 202, (path.stem, response.text)
        expected = {"status": "accepted", "event_id": json.loads(path.read_text())["id"]}
        assert response.json() == expected, path.stem


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
def test_a_lifecycle_shuffled_with_duplicates_ends_in_its_expected_state(client, path):
    lifecycle = load_lifecycle(path)
    events = lifecycle["events"]
    rng = random.Random(path.stem)
    arrival = events + rng.sample(events, k=3)
    rng.shuffle(arrival)
    codes = [post_signed(client, event).status_code for event in arrival]
    assert sorted(codes) == [200] * 3 + [202] * len(events)
    settle(client)
    state = client.get(f"/prescriptions/{lifecycle['subject']}").json()
    expected = lifecycle["expected_final_state"]
    assert state_subset(state, expected) == expected
    history = client.get(f"/prescriptions/{lifecycle['subject']}/history").json()
    assert sorted(e["event_id"] for e in history["events"]) == sorted(e["id"] for e in events)
    assert [e["version"] for e in history["events"]] == list(range(1, len(events) + 1))


def test_secret_rotation_accepts_either_configured_secret(settings):
    from dataclasses import replace

    old, new = new_secret(), new_secret()
    with serving(replace(settings, webhook_secrets=(old, new))) as client:
        assert post_signed(client, load_example("received"), old).status_code == 202
        assert post_signed(client, load_example("sent"), new).status_code == 202
        assert post_signed(client, load_example("processing"), old, new).status_code == 202
        refused = post_signed(client, load_example("shipped"), new_secret())
        assert refused.status_code == 401


@pytest.mark.parametrize(
    "skew", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["old", "ahead"]
)
def test_a_timestamp_six_minutes_off_is_a_401_and_stores_nothing(client, skew):
    response = post_signed(client, load_example("received"), skew=skew)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert "5 minutes" in response.json()["detail"]
    assert client.get("/deliveries/evt_example_received").status_code == 404


BAD_SIGNATURE_HEADERS = {
    "unsigned": {},
    "no-version": {"webhook-signature": "not-a-signature"},
    "bad-base64": {"webhook-signature": "v1,%%%"},
    "half-entry": {"webhook-signature": "v1,AAAA v1"},
    "bad-timestamp": {"webhook-timestamp": "tomorrow"},
    "empty-id": {"webhook-id": ""},
}


def test_missing_or_malformed_signature_headers_are_a_401(client):
    """Each case in turn on one app (one to start per store), nothing stored after any."""
    body = body_of(load_example("received"))
    secret = client.app.state.parts.settings.webhook_secrets[0]
    for case, headers in BAD_SIGNATURE_HEADERS.items():
        sent = (
            {**signed_headers(body, secret), **headers}
            if headers
            else {"content-type": "application/json"}
        )
        response = client.post(URL, content=body, headers=sent)
        assert response.status_code == 401, (case, response.text)
        assert response.json()["error"] == "invalid_signature", case
        assert stored_events(client) == 0, case


def test_a_body_changed_after_signing_is_a_401_and_stores_nothing(client):
    body = body_of(load_example("received"))
    headers = signed_headers(body, *client.app.state.parts.settings.webhook_secrets)
    response = client.post(URL, content=body.replace(b"Testy", b"Tasty"), headers=headers)
    assert response.status_code == 401
    assert stored_events(client) == 0


def test_a_signed_body_that_is_not_a_json_object_is_a_400(client):
    for body in (b"not json", b"[1, 2, 3]", b'"text"'):
        response = post_signed(client, body)
        assert (response.status_code, response.json()["error"]) == (400, "not_a_json_object"), body


def test_a_body_over_one_mebibyte_is_a_413(client):
    payload = load_example("updated")
    payload["data"]["notes"] = "x" * (1024 * 1024)
    response = post_signed(client, payload)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_a_body_of_exactly_one_mebibyte_is_not_refused_for_size(client):
    payload = load_example("updated")
    base = len(body_of({**payload, "data": {**payload["data"], "notes": ""}}))
    payload["data"]["notes"] = "x" * (1024 * 1024 - base)
    body = body_of(payload)
    assert len(body) == 1024 * 1024
    assert post_signed(client, body).status_code == 202


def test_a_body_that_is_not_declared_json_is_a_415(client):
    body = body_of(load_example("received"))
    headers = {
        **signed_headers(body, *client.app.state.parts.settings.webhook_secrets),
        "content-type": "text/plain",
    }
    response = client.post(URL, content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (415, "unsupported_media_type")


def test_a_broken_envelope_is_a_422_that_names_the_field_and_stores_nothing(client):
    payload = load_example("received")
    del payload["occurred_at"]
    response = post_signed(client, payload)
    assert response.status_code == 422
    assert response.json()["problems"] == [{"field": "occurred_at", "problem": "Field required"}]
    assert client.get("/deliveries/evt_example_received").status_code == 404


def test_an_envelope_instant_in_unix_seconds_is_a_422_naming_it_and_stores_nothing(client):
    """Through the fast path and the framework alike (the problem is the framework's 422)."""
    payload = {**load_example("received"), "occurred_at": "1741286400"}
    response = post_signed(client, payload)
    assert response.status_code == 422
    (problem,) = response.json()["problems"]
    assert problem["field"] == "occurred_at"
    assert "RFC 3339" in problem["problem"]
    assert client.get("/deliveries/evt_example_received").status_code == 404


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "drx.prescription.teleported"}, "unknown type"),
        (
            {
                "data": {
                    "fill_number": 1,
                    "carrier": "UPS",
                    "tracking_number": "1Z",
                    "shipped_at": "2025-03-06T18:40Z",
                }
            },
            "data.shipped_at",
        ),
        ({"schema_version": "2.0"}, "only major version 1"),
        ({"data": {"fill_number": "one"}}, "data breaks the contract"),
    ],
)
def test_an_authentic_delivery_that_cannot_be_applied_is_parked_and_answered_202(
    client, change, reason
):
    payload = {**load_example("shipped"), **change}
    response = post_signed(client, payload)
    assert response.status_code == 202
    answer = response.json()
    assert (answer["status"], answer["parked"]) == ("accepted", True)
    assert reason in answer["reason"]
    delivery = client.get(f"/deliveries/{payload['id']}").json()
    assert (delivery["status"], delivery["payload"]) == ("parked", payload)
    assert reason in delivery["reason"]
    settle(client)
    assert client.get("/prescriptions/drx_rx_7Q2M9K").status_code == 404
    assert post_signed(client, payload).status_code == 200


def test_a_fault_in_our_own_code_parks_the_delivery_and_answers_202(client, monkeypatch, caplog):
    import interfaces.http.webhooks

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(interfaces.http.webhooks, "translate", broken)
    caplog.set_level(logging.INFO)
    response = post_signed(client, load_example("sent"))
    assert response.status_code == 202
    assert response.json()["reason"].startswith("internal error: KeyError")
    assert client.get("/deliveries/evt_example_sent").json()["status"] == "parked"
    # Logged once, as an error, once stored.
    parked = [r for r in caplog.records if "evt_example_sent parked" in r.getMessage()]
    assert [r.levelno for r in parked] == [logging.ERROR]


def test_the_stored_delivery_keeps_the_exact_bytes_and_signature_headers(client):
    body = (
        b'{"id":"evt_raw","type":"drx.prescription.sent","schema_version":"1.0",'
        b'"source":"s","occurred_at":"2025-03-04T15:22:40Z","subject":"rx_raw","data":{},'
        b'"extra":  [1, 2]}'
    )
    secret = client.app.state.parts.settings.webhook_secrets[0]
    headers = signed_headers(body, secret, message_id="msg_raw")
    assert client.post(URL, content=body, headers=headers).status_code == 202
    delivery = client.get("/deliveries/evt_raw").json()
    assert delivery["raw_body"].encode() == body
    assert delivery["status"] == "processed"
    from standardwebhooks.webhooks import Webhook

    stored = client.app.state.parts.prescriptions.delivery("evt_raw")
    Webhook(secret).verify(
        stored.body,
        {
            "webhook-id": stored.webhook_id,
            "webhook-timestamp": stored.webhook_timestamp,
            "webhook-signature": stored.webhook_signature,
        },
        json_parse=False,
    )


def test_a_repeated_id_with_another_body_is_answered_duplicate_and_listed_as_a_conflict(client):
    payload = load_example("shipped")
    assert post_signed(client, payload).status_code == 202
    other = {**payload, "data": {**payload["data"], "carrier": "UPS"}}
    answer = post_signed(client, other)
    assert (answer.status_code, answer.json()) == (
        200,
        {"status": "duplicate", "event_id": payload["id"], "conflict": True},
    )
    settle(client)
    (listed,) = client.get("/deliveries", params={"status": "conflict"}).json()["items"]
    assert (listed["event_id"], listed["status"], listed["conflicts"]) == (
        payload["id"],
        "conflict",
        1,
    )
    detail = client.get(f"/deliveries/{payload['id']}").json()
    assert detail["payload"] == payload
    assert [json.loads(c["raw_body"]) for c in detail["conflicting_copies"]] == [other]
    assert client.get("/prescriptions/drx_rx_7Q2M9K").json()["shipment"]["carrier"] == "USPS"
    metrics = client.get("/metrics").text
    assert metric(metrics, "drx_deliveries_conflicting") == 1
    assert metric(metrics, "drx_webhook_deliveries_total", outcome="conflict") == 1


def test_a_parked_deliverys_corrected_resend_is_applied_and_replay_no_longer_needed(client):
    payload = load_example("shipped")
    broken = {**payload, "data": {**payload["data"], "tracking_number": 12345}}
    first = post_signed(client, broken).json()
    assert first["parked"] is True
    corrected = post_signed(client, payload)
    assert (corrected.status_code, corrected.json()) == (
        202,
        {"status": "accepted", "event_id": payload["id"]},
    )
    settle(client)
    state = client.get("/prescriptions/drx_rx_7Q2M9K").json()
    assert (state["version"], state["shipment"]["tracking_number"]) == (
        1,
        payload["data"]["tracking_number"],
    )
    detail = client.get(f"/deliveries/{payload['id']}").json()
    assert (detail["status"], detail["payload"]) == ("processed", payload)
    assert client.post(f"/deliveries/{payload['id']}/replay").status_code == 409


def test_a_webhook_id_that_is_not_ascii_verifies_as_its_sender_signed_it(client):
    """The library signs the id's UTF-8 bytes, and they arrive as such; the server hands header
    values over decoded as latin-1, so the check must sign the bytes as they came."""
    body = body_of(load_example("received"))
    headers = signed_headers(
        body, *client.app.state.parts.settings.webhook_secrets, message_id="msg_é"
    )
    raw = {name: value.encode() for name, value in headers.items()}  # UTF-8 on the wire
    answer = client.post(URL, content=body, headers=raw)
    assert answer.status_code == 202, answer.text
    # Another secret's entry, then empty ones (doubled spaces), then ours: the 8 entries looked
    # at are the first 8 that are there.
    empties = {**raw, "webhook-signature": b"v1,AAAA" + b" " * 12 + raw["webhook-signature"]}
    assert client.post(URL, content=body, headers=empties).status_code == 200
