"""The state function (contract section 4): lifecycles, arrival-order independence, edge cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.facts import Fact, FactKind
from domain.state import derive_state, extend_state, state_from_dict
from interfaces.drx.translator import parse_envelope, read_fact
from tests.helpers import LIFECYCLES, load_example, load_lifecycle, state_subset

T0 = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)


def fact_of(payload: dict[str, Any]) -> Fact:
    body = json.dumps(payload).encode()
    fact = read_fact(parse_envelope(body), body)
    assert isinstance(fact, Fact), fact
    return fact


def fact(
    kind: FactKind, minutes: int, event_id: str | None = None, sequence: int = 0, **data: Any
) -> Fact:
    return Fact.read(
        event_id or f"evt_{kind}_{minutes}", kind, T0 + timedelta(minutes=minutes), sequence, data
    )


def state_of(*facts: Fact) -> dict[str, Any]:
    return derive_state("rx", facts).as_dict()


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
def test_each_lifecycle_ends_in_its_expected_state(path):
    lifecycle = load_lifecycle(path)
    state = derive_state(lifecycle["subject"], [fact_of(e) for e in lifecycle["events"]])
    expected = lifecycle["expected_final_state"]
    assert state_subset(state.as_dict(), expected) == expected


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_arrival_order_with_duplicates_gives_the_same_state(path, data):
    lifecycle = load_lifecycle(path)
    facts = [fact_of(e) for e in lifecycle["events"]]
    repeats = data.draw(st.lists(st.sampled_from(facts), max_size=len(facts)))
    arrival = data.draw(st.permutations(facts + repeats))
    in_order = derive_state(lifecycle["subject"], facts)
    assert derive_state(lifecycle["subject"], arrival) == in_order


# What each example payload alone leads to: (status, provisional).
EXAMPLE_ALONE = {
    "received": ("received", False),
    "sent": ("sent", True),
    "updated": (None, True),
    "change_requested": (None, True),
    "change_approved": (None, True),
    "change_denied": (None, True),
    "cancel_requested": (None, True),
    "cancelled": ("cancelled", True),
    "cancel_denied": (None, True),
    "renewal_requested": (None, True),
    "renewal_approved": (None, True),
    "renewal_denied": (None, True),
    "processing": ("processing", True),
    "on_hold": ("on_hold", True),
    "dispensed": ("dispensed", True),
    "ready_for_pickup": ("ready_for_pickup", True),
    "shipped": ("shipped", True),
    "delivered": ("delivered", True),
    "transferred": ("transferred", True),
    "rejected": (None, True),  # filled in below from the example's `retryable`
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_ALONE))
def test_each_example_payload_alone_gives_its_status(name):
    payload = load_example(name)
    status, provisional = EXAMPLE_ALONE[name]
    if name == "rejected":
        status = "error" if payload["data"]["retryable"] else "rejected"
    state = derive_state(payload["subject"], [fact_of(payload)]).as_dict()
    assert (state["status"], state["provisional"], state["version"]) == (status, provisional, 1)
    assert state["last_event_type"] == payload["type"]


def test_a_status_fact_after_a_terminal_one_only_adds_an_anomaly():
    state = state_of(
        fact(FactKind.RECEIVED, 0, medication={"refills_authorized": 2}),
        fact(FactKind.CANCELLED, 10, cancelled_by="prescriber"),
        fact(FactKind.DISPENSED, 20, "evt_late", fill_number=1, refills_remaining=0),
    )
    assert state["status"] == "cancelled"
    assert (state["fill_number"], state["refills_remaining"]) == (0, 2)
    assert state["needs_review"] is True
    assert state["anomalies"] == [
        {"kind": "after_terminal", "event_id": "evt_late", "type": "drx.prescription.dispensed"}
    ]


def test_a_late_status_fact_arriving_first_still_ends_as_an_anomaly():
    late = fact(FactKind.SHIPPED, 30, fill_number=1, carrier="USPS", tracking_number="1")
    cancel = fact(FactKind.CANCELLED, 10, cancelled_by="system")
    assert state_of(late, cancel) == state_of(cancel, late)
    assert state_of(late, cancel)["shipment"] is None


def test_received_after_a_terminal_fact_is_no_anomaly_and_fills_the_details():
    state = state_of(
        fact(FactKind.REJECTED, 0, retryable=False, reason={"text": "no"}),
        fact(
            FactKind.RECEIVED,
            5,
            patient={"drx_patient_id": "p1"},
            medication={"refills_authorized": 3},
        ),
    )
    assert (state["status"], state["provisional"], state["needs_review"]) == (
        "rejected",
        False,
        False,
    )
    assert state["patient"] == {"drx_patient_id": "p1"}
    assert state["refills_remaining"] == 3


def test_requests_after_a_terminal_fact_still_open_and_close():
    state = state_of(
        fact(FactKind.TRANSFERRED, 0, to_pharmacy={"ncpdp_id": "1"}),
        fact(FactKind.RENEWAL_REQUESTED, 5, request_id="ren_1"),
    )
    assert [r["request_id"] for r in state["open_requests"]] == ["ren_1"]
    assert state["needs_review"] is False


def test_a_response_without_its_request_is_recorded_and_closes_nothing():
    state = state_of(
        fact(FactKind.CHANGE_REQUESTED, 0, request_id="chg_1"),
        fact(FactKind.CHANGE_DENIED, 5, request_id="chg_other", reason={"text": "no"}),
        fact(FactKind.CANCEL_DENIED, 6, request_id="chg_1", reason={"text": "wrong kind"}),
    )
    assert state["version"] == 3
    assert state["open_requests"] == [
        {"kind": "change", "request_id": "chg_1", "opened_at": "2025-03-04T15:00:00Z"}
    ]


def test_a_response_before_its_request_in_fact_order_leaves_the_request_open():
    state = state_of(
        fact(FactKind.RENEWAL_DENIED, 0, request_id="ren_1", reason={"text": "no"}),
        fact(FactKind.RENEWAL_REQUESTED, 5, request_id="ren_1"),
    )
    assert [r["request_id"] for r in state["open_requests"]] == ["ren_1"]


def test_cancelled_with_a_request_id_closes_the_cancel_request():
    state = state_of(
        fact(FactKind.CANCEL_REQUESTED, 0, request_id="cxl_1", requested_by="prescriber"),
        fact(FactKind.CANCELLED, 5, request_id="cxl_1", cancelled_by="pharmacy"),
    )
    assert (state["status"], state["open_requests"]) == ("cancelled", [])


def test_a_subject_first_seen_through_shipped_is_provisional_until_received():
    shipped = fact(FactKind.SHIPPED, 60, fill_number=1, carrier="UPS", tracking_number="1Z")
    alone = state_of(shipped)
    assert (alone["status"], alone["provisional"], alone["fill_number"]) == ("shipped", True, 1)
    assert alone["shipment"] == {"carrier": "UPS", "tracking_number": "1Z"}
    received = fact(FactKind.RECEIVED, 0, medication={"refills_authorized": 1})
    both = state_of(shipped, received)
    assert (both["status"], both["provisional"], both["refills_remaining"]) == ("shipped", False, 1)


def test_ties_in_occurred_at_are_broken_by_sequence_then_rank_then_id():
    # Same instant: rank puts delivered (6) after shipped (5) whatever the arrival order.
    shipped = fact(FactKind.SHIPPED, 0, "evt_b", fill_number=1, carrier="c", tracking_number="t")
    delivered = fact(FactKind.DELIVERED, 0, "evt_a", fill_number=1, handover="delivery")
    assert state_of(delivered, shipped)["status"] == "delivered"
    # A sequence outranks the rank.
    shipped_later = fact(
        FactKind.SHIPPED, 0, "evt_b", 2, fill_number=1, carrier="c", tracking_number="t"
    )
    delivered_first = fact(FactKind.DELIVERED, 0, "evt_a", 1, fill_number=1, handover="pickup")
    assert state_of(shipped_later, delivered_first)["status"] == "shipped"
    # Same instant, sequence and rank (7): the id decides, evt_1 before evt_2.
    cancel = fact(FactKind.CANCELLED, 0, "evt_1", cancelled_by="system")
    reject = fact(FactKind.REJECTED, 0, "evt_2", retryable=False, reason={"text": "x"})
    state = state_of(reject, cancel)
    assert state["status"] == "cancelled"
    assert state["anomalies"][0]["event_id"] == "evt_2"


def test_ties_across_offsets_compare_instants_not_text():
    at_utc = Fact.read("evt_z", FactKind.SENT, datetime(2025, 1, 1, 12, 0, tzinfo=UTC))
    offset = datetime.fromisoformat("2025-01-01T13:00:00+01:00")
    same_instant = Fact.read(
        "evt_a", FactKind.PROCESSING, offset, 0, {"fill_number": 1, "stage": "billing"}
    )
    assert state_of(same_instant, at_utc)["status"] == "processing"


def test_delivered_with_no_refills_left_completes_and_a_renewal_reopens_it():
    base = [
        fact(FactKind.DISPENSED, 0, fill_number=1, refills_remaining=0),
        fact(FactKind.DELIVERED, 5, fill_number=1, handover="pickup"),
    ]
    assert state_of(*base)["status"] == "completed"
    renewed = state_of(
        *base,
        fact(
            FactKind.RENEWAL_APPROVED, 10, request_id="r", outcome="approved", refills_authorized=2
        ),
    )
    assert (renewed["status"], renewed["refills_remaining"]) == ("delivered", 2)
    none_left = state_of(
        *base,
        fact(
            FactKind.RENEWAL_APPROVED, 10, request_id="r", outcome="approved", refills_authorized=0
        ),
    )
    assert none_left["status"] == "completed"


def test_received_sets_refills_only_while_unset():
    state = state_of(
        fact(FactKind.DISPENSED, 0, fill_number=1, refills_remaining=1),
        fact(FactKind.RECEIVED, 5, medication={"refills_authorized": 5}),
    )
    assert state["refills_remaining"] == 1


def test_updated_and_change_approved_replace_details_in_fact_order():
    state = state_of(
        fact(
            FactKind.RECEIVED,
            0,
            patient={"drx_patient_id": "p", "last_name": "Old"},
            medication={"name": "A", "refills_authorized": 1},
        ),
        fact(
            FactKind.CHANGE_APPROVED,
            20,
            request_id="c",
            outcome="approved_with_changes",
            approved_medication={"name": "C"},
        ),
        fact(FactKind.UPDATED, 10, patient={"drx_patient_id": "p"}, medication={"name": "B"}),
    )
    assert state["patient"] == {"drx_patient_id": "p"}
    assert state["medication"] == {"name": "C"}


def test_a_later_fill_starts_over_without_the_previous_shipment():
    state = state_of(
        fact(FactKind.SHIPPED, 0, fill_number=1, carrier="c", tracking_number="t"),
        fact(FactKind.PROCESSING, 10, fill_number=2, stage="filling"),
    )
    assert (state["fill_number"], state["shipment"]) == (2, None)
    lower = state_of(
        fact(FactKind.PROCESSING, 0, fill_number=2, stage="filling"),
        fact(FactKind.ON_HOLD, 10, fill_number=1, reason={"text": "x", "category": "other"}),
    )
    assert (lower["fill_number"], lower["status"]) == (2, "on_hold")


def test_rejected_retryable_is_an_error_that_later_facts_move_on_from():
    state = state_of(
        fact(FactKind.REJECTED, 0, retryable=True, reason={"text": "timeout"}),
        fact(FactKind.SENT, 5),
    )
    assert (state["status"], state["needs_review"]) == ("sent", False)


def test_a_repeated_event_id_counts_once():
    once = fact(FactKind.SENT, 0, "evt_1")
    assert state_of(once, once)["version"] == 1


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_state_folded_one_fact_at_a_time_in_any_arrival_order_is_the_derived_one(path, data):
    """What the read model does: extend the stored state by a fact that orders after the last
    one folded; derive it again from every fact for one that comes late. At every step the
    state equals the pure function of the facts so far, and survives its JSON round trip."""
    lifecycle = load_lifecycle(path)
    facts = [fact_of(e) for e in lifecycle["events"]]
    arrival = data.draw(st.permutations(facts))
    subject = lifecycle["subject"]
    state, last, seen = derive_state(subject, []), None, []
    for fact in arrival:
        seen.append(fact)
        if last is None or fact.order_key() > last:
            stored = json.loads(json.dumps(state.as_dict()))
            state, last = extend_state(state_from_dict(stored), fact), fact.order_key()
        else:
            state = derive_state(subject, seen)
        assert state == derive_state(subject, seen)
        assert state_from_dict(json.loads(json.dumps(state.as_dict()))) == state
