"""The change feed over HTTP, as an internal app follows it: from position 0, in pages, it ends
with exactly the state GET /prescriptions/{id} gives, whatever the order DRx delivered in."""

from __future__ import annotations

import random
from urllib.parse import quote

from tests.helpers import LIFECYCLES, load_lifecycle, post_signed, relabelled, settle


def follow(client, page=9, **filters):
    """Every change, page after page, from position 0: (changes, the last next_after)."""
    found, after = [], 0
    while True:
        answer = client.get("/changes", params={"after": after, "limit": page, **filters})
        assert answer.status_code == 200
        body = answer.json()
        found += body["items"]
        if len(body["items"]) < page:  # the last page: it goes on from the feed's head
            assert body["next_after"] >= (body["items"] or [{"position": after}])[-1]["position"]
            return found, body["next_after"]
        assert body["next_after"] == body["items"][-1]["position"]
        after = body["next_after"]


def test_a_consumer_from_zero_ends_with_every_prescriptions_state_after_any_order(client):
    rng = random.Random(4)
    events = [
        e for p in LIFECYCLES for n in range(2) for e in relabelled(load_lifecycle(p), f"h{n}")
    ]
    arrival = events + rng.sample(events, k=12)  # duplicates
    rng.shuffle(arrival)
    for event in arrival:
        assert post_signed(client, event).status_code in (200, 202)
    settle(client)
    changes, _ = follow(client)
    latest = {}
    for change in changes:
        if change.get("state") is not None:
            latest[change["prescription_id"]] = change["state"]
    assert set(latest) == {e["subject"] for e in events}
    for subject, state in latest.items():
        assert state == client.get(f"/prescriptions/{quote(subject, safe='')}").json()
    changed = [c for c in changes if c["type"] == "prescription.changed"]
    assert len(changed) == len({e["id"] for e in events})  # one per fact, duplicates none
    # A follower whose filter matches nothing more goes on from the head, not from where it was.
    nobody = client.get("/changes", params={"prescription_id": "drx_rx_nobody"}).json()
    assert nobody == {"items": [], "next_after": changes[-1]["position"]}


def test_the_feeds_parameters_are_checked(client):
    for query in ("after=-1", "after=abc", "limit=0", "limit=1001", "types=prescription.gone"):
        answer = client.get(f"/changes?{query}")
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_parameter"), query
    # Past the head: a position this feed never gave out (another database's, or this one
    # restored from an older backup). Waiting there would skip the changes put below it.
    head = client.get("/changes", params={"limit": 1000}).json()["next_after"]
    for after in (head + 1, 999999999999999999):
        answer = client.get(f"/changes?after={after}")
        assert (answer.status_code, answer.json()["error"]) == (409, "position_past_head")
        assert f"head ({head})" in answer.json()["detail"]
    assert client.get(f"/changes?after={head}").json() == {"items": [], "next_after": head}
