"""GET /prescriptions, /deliveries, replay, /projections, keys and metrics, through HTTP."""

from __future__ import annotations

from domain.prescription import Prescription
from tests.helpers import (
    AUTH,
    LIFECYCLES,
    load_example,
    load_lifecycle,
    metric,
    post_signed,
    serving,
    settle,
)


def seed_prescriptions(client, count: int) -> list[str]:
    """`count` prescriptions written straight to the store (fast), then projected."""
    app = client.app.state.parts.prescriptions
    subjects = [f"drx_rx_{i:05d}" for i in range(count)]
    for start in range(0, count, 250):
        app.save(*(Prescription(subject) for subject in subjects[start : start + 250]))
    settle(client)
    return subjects


def page_through(client, **params) -> list[str]:
    seen, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = client.get("/prescriptions", params=query).json()
        seen += [item["prescription_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_paging_through_a_thousand_prescriptions_seven_at_a_time_yields_each_once(client):
    subjects = seed_prescriptions(client, 1000)
    seen = page_through(client, limit=7)
    assert len(seen) == len(set(seen)) == 1000
    assert seen == sorted(subjects)


def test_paging_stays_correct_while_new_facts_and_prescriptions_arrive(client):
    subjects = seed_prescriptions(client, 60)
    seen, cursor, round_ = [], None, 0
    while True:
        body = client.get(
            "/prescriptions", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [item["prescription_id"] for item in body["items"]]
        # Between pages: a fact for a seen and an unseen prescription, and a new prescription.
        for subject in (subjects[round_], subjects[-1 - round_], f"drx_rx_new_{round_}"):
            payload = {**load_example("sent"), "id": f"evt_{subject}_{round_}", "subject": subject}
            assert post_signed(client, payload).status_code == 202
        settle(client)
        round_ += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    original = [s for s in seen if s in set(subjects)]
    assert original == sorted(subjects)  # each once, none skipped


def test_list_items_have_the_state_shape_and_filters_apply(client):
    for path in LIFECYCLES:
        for event in load_lifecycle(path)["events"]:
            assert post_signed(client, event).status_code == 202
    settle(client)
    everything = client.get("/prescriptions").json()
    assert len(everything["items"]) == len(LIFECYCLES)
    for item in everything["items"]:
        assert item == client.get(f"/prescriptions/{item['prescription_id']}").json()
    delivered = client.get("/prescriptions", params={"status": "delivered"}).json()["items"]
    assert {i["prescription_id"] for i in delivered} == {"drx_rx_LC0001", "drx_rx_LC0002"}
    by_pharmacy = client.get("/prescriptions", params={"pharmacy_ncpdp_id": "0000000"}).json()
    assert len(by_pharmacy["items"]) >= 1
    assert client.get("/prescriptions", params={"needs_review": "true"}).json()["items"] == []
    recent = client.get("/prescriptions", params={"updated_since": "2999-01-01T00:00:00Z"})
    assert recent.json()["items"] == []
    since_long_ago = client.get("/prescriptions", params={"updated_since": "2000-01-01T00:00:00Z"})
    assert len(since_long_ago.json()["items"]) == len(LIFECYCLES)


INVALID_LIST_PARAMETERS = [
    ({"limit": 0}, "limit"),
    ({"limit": 501}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"status": "lost"}, "status"),
    ({"needs_review": "perhaps"}, "needs_review"),
    ({"updated_since": "last week"}, "updated_since"),
    ({"cursor": "x" * 201}, "cursor"),
]


def test_an_invalid_list_parameter_is_a_400_that_names_it(client):
    for params, named in INVALID_LIST_PARAMETERS:
        response = client.get("/prescriptions", params=params)
        assert response.status_code == 400, params
        assert named in response.text, params


def test_deliveries_list_filters_by_outcome_and_replay_applies_a_parked_one(client, monkeypatch):
    import interfaces.drx.translator as translator

    assert post_signed(client, load_example("received")).status_code == 202
    real = translator.read_fact

    def broken(envelope, body):
        if envelope.type.endswith(".shipped"):
            raise ValueError("bug in the shipped handling")
        return real(envelope, body)

    monkeypatch.setattr(translator, "read_fact", broken)
    answer = post_signed(client, load_example("shipped")).json()
    assert answer["parked"] is True
    settle(client)
    parked = client.get("/deliveries", params={"status": "parked"}).json()["items"]
    assert [d["event_id"] for d in parked] == ["evt_example_shipped"]
    processed = client.get("/deliveries", params={"status": "processed"}).json()["items"]
    assert [d["event_id"] for d in processed] == ["evt_example_received"]

    still_broken = client.post("/deliveries/evt_example_shipped/replay")
    assert (still_broken.status_code, still_broken.json()["status"]) == (200, "parked")

    monkeypatch.setattr(translator, "read_fact", real)  # the fix is deployed
    replayed = client.post("/deliveries/evt_example_shipped/replay")
    assert replayed.json() == {
        "status": "processed",
        "event_id": "evt_example_shipped",
        "reason": None,
    }
    settle(client)
    assert client.get("/prescriptions/drx_rx_7Q2M9K").json()["status"] == "shipped"
    again = client.post("/deliveries/evt_example_shipped/replay")
    assert (again.status_code, again.json()["error"]) == (409, "delivery_not_parked")
    assert client.post("/deliveries/evt_nothing/replay").status_code == 404
    assert client.get("/deliveries", params={"status": "parked"}).json()["items"] == []


def test_deliveries_page_in_arrival_order(client):
    names = ["received", "sent", "processing", "dispensed", "shipped"]
    for name in names:
        post_signed(client, load_example(name))
    settle(client)
    first = client.get("/deliveries", params={"limit": 2}).json()
    second = client.get("/deliveries", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = client.get("/deliveries", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    listed = [d["event_id"] for page in (first, second, third) for d in page["items"]]
    assert listed == [f"evt_example_{n}" for n in names]
    assert third["next_cursor"] is None
    assert first["items"][0]["received_at"].endswith("Z")


def test_projections_report_position_head_and_lag(client):
    post_signed(client, load_example("received"))
    settle(client)
    projections = client.get("/projections").json()
    assert {p["name"] for p in projections} == {"prescriptions", "deliveries", "changes"}
    assert all(p["lag"] == 0 and p["position"] == p["head"] > 0 for p in projections)


READ_ENDPOINTS = [
    ("GET", "/prescriptions"),
    ("GET", "/prescriptions/drx_rx_7Q2M9K"),
    ("GET", "/prescriptions/drx_rx_7Q2M9K/history"),
    ("GET", "/deliveries"),
    ("GET", "/deliveries/evt_example_received"),
    ("POST", "/deliveries/evt_example_received/replay"),
    ("GET", "/projections"),
    ("GET", "/changes"),
    ("GET", "/changes/stream"),
]


def test_read_endpoints_refuse_requests_without_a_valid_key(client):
    client.headers.pop("Authorization")
    for method, path in READ_ENDPOINTS:
        for authorization in (
            None,
            "Bearer wrong-key",
            "Basic abc",
            "Bearer ",
            "Bearer kl\u00fcssel".encode(),
        ):
            headers = {"Authorization": authorization} if authorization else {}
            response = client.request(method, path, headers=headers)
            said = (method, path, authorization)
            assert response.status_code == 401, said
            assert response.json()["error"] == "unauthorized", said
            assert response.headers["www-authenticate"] == "Bearer", said


def test_a_second_configured_key_works_and_open_endpoints_need_none(settings):
    from dataclasses import replace

    with serving(
        replace(settings, api_keys=("old-key", AUTH["Authorization"].split()[1]))
    ) as client:
        assert (
            client.get("/prescriptions", headers={"Authorization": "Bearer old-key"}).status_code
            == 200
        )
        assert client.get("/prescriptions", headers=AUTH).status_code == 200
        for path in ("/health", "/ready", "/metrics", "/schema/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert post_signed(client, load_example("received")).status_code == 202


def test_metrics_count_outcomes_time_the_webhook_and_report_lag_and_parked(client):
    post_signed(client, load_example("received"))
    post_signed(client, load_example("received"))
    post_signed(client, {**load_example("sent"), "type": "drx.prescription.teleported"})
    client.post("/webhooks/drx", content=b"{}", headers={"content-type": "application/json"})
    payload = load_example("updated")
    payload["data"]["notes"] = "x" * (1024 * 1024)
    post_signed(client, payload)
    settle(client)
    text = client.get("/metrics").text
    for outcome in ("accepted", "duplicate", "parked", "invalid_signature", "body_too_large"):
        assert metric(text, "drx_webhook_deliveries_total", outcome=outcome) == 1, outcome
    assert metric(text, "drx_webhook_latency_seconds_bucket", le="+Inf") == 5
    assert metric(text, "drx_webhook_latency_seconds_count") == 5
    assert metric(text, "drx_projection_lag_events", projection="prescriptions") == 0
    assert metric(text, "drx_deliveries_parked") == 1
