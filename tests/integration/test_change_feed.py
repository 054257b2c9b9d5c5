"""The change feed on real stores: one change per fact and per signal, at positions a rebuild
keeps, each prescription.changed carrying the state as of its fact; signals derived once."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from domain import names
from domain.clock import DrivenClock
from infrastructure.change_feed import ChangeFilter
from infrastructure.projector import projector_for
from interfaces.bootstrap import bootstrap
from tests.helpers import LIFECYCLES, deliver, load_example, load_lifecycle, relabelled

EVERYTHING = ChangeFilter()


def all_changes(parts, where=EVERYTHING, page=7):
    """Every change, read the way a consumer does: pages after the last position seen."""
    found, after = [], 0
    while True:
        rows = parts.feed.after(after, page, where)
        found += [json.loads(row.document) for row in rows]
        if len(rows) < page:
            return found
        after = rows[-1].position


def shuffled_lifecycles(seed, copies=2):
    rng = random.Random(seed)
    events = [
        e
        for path in LIFECYCLES
        for n in range(copies)
        for e in relabelled(load_lifecycle(path), f"c{n}")
    ]
    arrival = events + rng.sample(events, k=15)  # duplicates
    rng.shuffle(arrival)
    return arrival


@pytest.fixture
def projector(parts, settings):
    runner = projector_for(parts.prescriptions, parts.read_db, settings, batch_size=9)
    yield runner
    runner.stop()


def test_a_consumer_from_position_zero_ends_with_every_prescriptions_state(parts, projector):
    for event in shuffled_lifecycles(seed=3):
        deliver(parts.prescriptions, event)
    projector.catch_up()
    changes = all_changes(parts)
    positions = [c["position"] for c in changes]
    assert positions == sorted(set(positions)), "positions only grow, each once"
    latest = {}
    for change in changes:
        if "state" in change:
            latest[change["prescription_id"]] = change["state"]
    subjects = {e["subject"] for e in shuffled_lifecycles(seed=3)}
    assert set(latest) == subjects
    for subject, state in latest.items():
        assert state == parts.prescriptions.state(subject).as_dict()


def test_each_change_carries_the_state_as_of_its_facts_recorded_time(parts, projector):
    events = shuffled_lifecycles(seed=11, copies=1)
    for event in events:
        deliver(parts.prescriptions, event)
    projector.catch_up()
    changed = all_changes(parts, ChangeFilter(types=(names.PRESCRIPTION_CHANGED,)))
    # One per recorded fact: duplicates are no new facts.
    assert len(changed) == len({e["id"] for e in events})
    for change in changed:
        as_of = datetime.fromisoformat(change["recorded_at"])
        then = parts.prescriptions.state(change["prescription_id"], as_of=as_of).as_dict()
        assert change["state"] == then
        assert (
            change["fact_type"] == change["state"]["last_event_type"]
            or change["state"]["last_occurred_at"] >= change["occurred_at"]
        )  # a late fact does not become the last


def test_the_feeds_filters(parts, projector):
    for event in shuffled_lifecycles(seed=5):
        deliver(parts.prescriptions, event)
    projector.catch_up()
    everything = all_changes(parts)
    subject = everything[0]["prescription_id"]
    mine = all_changes(parts, ChangeFilter(prescription_id=subject))
    assert mine
    assert mine == [c for c in everything if c["prescription_id"] == subject]
    patient = next(
        c["state"]["patient"]["drx_patient_id"]
        for c in everything
        if c.get("state") and c["state"]["patient"]
    )
    theirs = all_changes(parts, ChangeFilter(patient_id=patient))
    assert theirs == [
        c
        for c in everything
        if (c.get("state") or {}).get("patient")
        and c["state"]["patient"]["drx_patient_id"] == patient
    ]
    overdue = all_changes(parts, ChangeFilter(types=(names.REQUEST_OVERDUE, names.NEEDS_REVIEW)))
    assert overdue == [
        c for c in everything if c["type"] in (names.REQUEST_OVERDUE, names.NEEDS_REVIEW)
    ]


def test_a_fact_after_a_terminal_one_signals_needs_review_once(parts, projector):
    received, cancelled, shipped = (load_example(n) for n in ("received", "cancelled", "shipped"))
    for event in (received, cancelled):
        deliver(parts.prescriptions, event)
    projector.catch_up()
    assert all_changes(parts, ChangeFilter(types=(names.NEEDS_REVIEW,))) == []
    later = {**shipped, "subject": received["subject"], "occurred_at": "2031-01-01T00:00:00Z"}
    later["correlation"] = {**later.get("correlation", {}), "prescription_id": received["subject"]}
    deliver(parts.prescriptions, later)
    deliver(parts.prescriptions, later)  # a duplicate: no new fact, no new change
    projector.catch_up()
    (review,) = all_changes(parts, ChangeFilter(types=(names.NEEDS_REVIEW,)))
    assert review["anomaly"] == {
        "kind": "after_terminal",
        "event_id": later["id"],
        "type": later["type"],
    }
    assert review["event_id"] == later["id"]
    assert review["state"]["needs_review"] is True
    (changed,) = [
        c
        for c in all_changes(parts)
        if c.get("event_id") == later["id"] and c["type"] == names.PRESCRIPTION_CHANGED
    ]
    assert review["position"] == changed["position"] + 1


def test_a_parked_delivery_and_a_conflicting_copy_are_changes(parts, projector):
    unknown = {
        **load_example("received"),
        "id": "evt_unknown_1",
        "type": "drx.prescription.teleported",
    }
    deliver(parts.prescriptions, unknown)
    sent = load_example("sent")
    deliver(parts.prescriptions, sent)
    deliver(parts.prescriptions, {**sent, "data": {**sent.get("data", {}), "note": "another body"}})
    projector.catch_up()
    (parked,) = all_changes(parts, ChangeFilter(types=(names.DELIVERY_PARKED,)))
    assert parked["delivery"]["event_id"] == "evt_unknown_1"
    assert parked["delivery"]["type"] == "drx.prescription.teleported"
    assert parked["delivery"]["reason"]
    (conflict,) = all_changes(parts, ChangeFilter(types=(names.DELIVERY_CONFLICT,)))
    assert conflict["delivery"] == {
        "event_id": sent["id"],
        "type": sent["type"],
        "subject": sent["subject"],
    }


def test_a_rebuild_gives_every_change_the_position_it_had(parts, projector):
    for event in shuffled_lifecycles(seed=9):
        deliver(parts.prescriptions, event)
    projector.catch_up()
    before = all_changes(parts)
    verified = parts.rebuilder.rebuild("changes", verify=True)
    assert verified.differences == []
    swapped = parts.rebuilder.rebuild("changes", verify=False)
    assert swapped.swapped
    assert all_changes(parts) == before


def test_a_rebuild_names_a_change_that_differs(parts, projector):
    for event in shuffled_lifecycles(seed=2, copies=1):
        deliver(parts.prescriptions, event)
    projector.catch_up()
    with parts.read_db.transaction() as cursor:
        cursor.execute(
            "UPDATE rx_changes SET status = 'tampered' WHERE position = (SELECT MIN(position) FROM rx_changes)"
        )
    result = parts.rebuilder.rebuild("changes", verify=True)
    assert [(d.field, d.live) for d in result.differences] == [("status", "tampered")]


# Overdue requests, with a clock the test drives.

SLA = timedelta(hours=48)


def a_change_request(tag, opened_at):
    base = load_lifecycle(next(p for p in LIFECYCLES if "change" in p.name))
    events = relabelled(base, tag)
    received = next(e for e in events if e["type"].endswith(".received"))
    request = next(e for e in events if e["type"].endswith(".change_requested"))
    answer = next(e for e in events if e["type"].endswith(".change_approved"))
    for event, offset in ((received, -60), (request, 0), (answer, 60)):
        event["occurred_at"] = (
            (opened_at + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")
        )
    return received, request, answer


@pytest.fixture
def clocked(settings):
    clock = DrivenClock(datetime(2030, 1, 1, tzinfo=UTC))
    with bootstrap(settings, clock=clock, batch_size=50) as built:
        yield built, clock


def overdue_changes(parts):
    return all_changes(parts, ChangeFilter(types=(names.REQUEST_OVERDUE,)))


def test_a_request_open_past_the_sla_is_signalled_once(clocked):
    parts, clock = clocked
    received, request, _ = a_change_request("late", clock.now())
    for event in (received, request):
        deliver(parts.prescriptions, event)
    projector, watch = parts.projector, parts.projector.watch
    projector.catch_up()
    clock.advance(SLA - timedelta(seconds=1))
    assert watch.check(force=True) == 0
    clock.advance(timedelta(seconds=1))
    assert watch.check(force=True) == 1
    assert watch.check(force=True) == 0  # raised, not yet projected: not asked again
    projector.catch_up()
    (signal,) = overdue_changes(parts)
    assert signal["request"] == {
        "kind": "change",
        "request_id": request["data"]["request_id"],
        "opened_at": request["occurred_at"],
    }
    assert signal["state"]["open_requests"]
    clock.advance(timedelta(days=5))
    assert watch.check(force=True) == 0
    projector.catch_up()
    assert len(overdue_changes(parts)) == 1


def test_a_request_answered_in_time_is_never_signalled(clocked):
    parts, clock = clocked
    for event in a_change_request("ontime", clock.now()):
        deliver(parts.prescriptions, event)
    parts.projector.catch_up()
    clock.advance(SLA * 3)
    assert parts.projector.watch.check(force=True) == 0
    parts.projector.catch_up()
    assert overdue_changes(parts) == []


def test_an_overdue_request_is_signalled_once_across_a_restart_and_a_rebuild(settings):
    clock = DrivenClock(datetime(2030, 1, 1, tzinfo=UTC))
    received, request, _ = a_change_request("restart", clock.now())
    with bootstrap(settings, clock=clock) as first:
        for event in (received, request):
            deliver(first.prescriptions, event)
        first.projector.catch_up()
        clock.advance(SLA * 2)
        assert first.projector.watch.check(force=True) == 1
        # It stops before projecting the signal: the next process finds it in the store.
    with bootstrap(settings, clock=clock) as second:
        assert second.projector.watch.check(force=True) == 0  # not projected: the id collides
        second.projector.catch_up()
        assert second.projector.watch.check(force=True) == 0
        (signal,) = overdue_changes(second)
        second.rebuilder.rebuild("changes", verify=False)
        assert overdue_changes(second) == [signal]
        assert second.projector.watch.check(force=True) == 0
