"""Dead letters as operators see them: GET /projections, the list, /ready, /metrics, the retry."""

from __future__ import annotations

from tests.helpers import LIFECYCLES, load_lifecycle, metric, post_signed, relabelled, settle
from tests.integration.test_dead_letters import bug_in_the_state_code_for


def test_an_event_set_aside_shows_everywhere_and_a_retry_after_the_fix_applies_it(
    client, monkeypatch
):
    victim = relabelled(load_lifecycle(LIFECYCLES[0]), "http_victim")
    fix = bug_in_the_state_code_for(victim[1]["id"], monkeypatch)
    for event in victim:
        assert post_signed(client, event).status_code == 202
    settle(client)

    rows = {row["name"]: row for row in client.get("/projections").json()}
    count = len(victim) - 1
    assert rows["prescriptions"]["dead_letters"] == count
    assert rows["prescriptions"]["lag"] == 0
    assert rows["deliveries"]["dead_letters"] == 0
    letters = client.get("/projections/prescriptions/dead-letters").json()
    assert [letter["held"] for letter in letters] == [False] + [True] * (count - 1)
    assert "KeyError" in letters[0]["reason"]
    ready = client.get("/ready")
    assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
    # The change feed folds the same state, so it sets the same facts aside.
    assert ready.json()["dead_letters"] == {"prescriptions": count, "changes": count}
    metrics = client.get("/metrics").text
    assert metric(metrics, "drx_projection_dead_letters", projection="prescriptions") == count

    fix()
    retried = client.post("/projections/prescriptions/dead-letters/retry")
    assert (retried.status_code, retried.json()) == (
        200,
        {"name": "prescriptions", "applied": count, "still_dead": 0},
    )
    assert client.post("/projections/changes/dead-letters/retry").json()["applied"] == count
    assert client.get("/ready").json() == {"status": "ready"}
    state = client.get(f"/prescriptions/{victim[0]['subject']}").json()
    assert state["version"] == len(victim)


def test_an_unknown_projection_is_a_404(client):
    response = client.get("/projections/nope/dead-letters")
    assert (response.status_code, response.json()["error"]) == (404, "projection_not_found")
