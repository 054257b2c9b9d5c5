"""The read endpoints of the core slice: state, as_of, history, deliveries, probes, schema."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.helpers import load_example, post_signed, settle


def test_an_unknown_prescription_or_delivery_is_a_404_with_a_json_body(client):
    response = client.get("/prescriptions/drx_rx_nobody")
    assert (response.status_code, response.json()["error"]) == (404, "prescription_not_found")
    assert client.get("/prescriptions/drx_rx_nobody/history").status_code == 404
    response = client.get("/deliveries/evt_nothing")
    assert (response.status_code, response.json()["error"]) == (404, "delivery_not_found")


def test_as_of_gives_the_state_before_a_later_fact_and_404_before_the_first(client):
    before_any = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    assert post_signed(client, load_example("received")).status_code == 202
    time.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    assert post_signed(client, load_example("sent")).status_code == 202

    then = client.get("/prescriptions/drx_rx_7Q2M9K", params={"as_of": between}).json()
    assert (then["status"], then["version"]) == ("received", 1)
    settle(client)
    assert client.get("/prescriptions/drx_rx_7Q2M9K").json()["status"] == "sent"
    early = client.get("/prescriptions/drx_rx_7Q2M9K", params={"as_of": before_any})
    assert early.status_code == 404


@pytest.mark.parametrize("as_of", ["yesterday", "2025-03-04T15:22:10", "2025-13-01T00:00:00Z"])
def test_an_invalid_as_of_is_a_400_that_names_it(client, as_of):
    post_signed(client, load_example("received"))
    response = client.get("/prescriptions/drx_rx_7Q2M9K", params={"as_of": as_of})
    assert response.status_code == 400
    assert "as_of" in response.json()["detail"]


def test_history_lists_each_fact_in_recorded_order_with_its_data(client):
    post_signed(client, load_example("shipped"))
    post_signed(client, load_example("received"))
    history = client.get("/prescriptions/drx_rx_7Q2M9K/history").json()
    assert history["prescription_id"] == "drx_rx_7Q2M9K"
    assert [(e["version"], e["type"], e["event_id"]) for e in history["events"]] == [
        (1, "drx.prescription.shipped", "evt_example_shipped"),
        (2, "drx.prescription.received", "evt_example_received"),
    ]
    first = history["events"][0]
    assert first["occurred_at"] == "2025-03-06T18:40:00Z"
    assert first["data"] == load_example("shipped")["data"]
    assert first["recorded_at"].endswith("Z")


def test_probes_and_the_openapi_document(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    schema = client.get("/schema/openapi.json").json()
    assert {"/webhooks/drx", "/prescriptions/{prescription_id}", "/health", "/ready"} <= set(
        schema["paths"]
    )
