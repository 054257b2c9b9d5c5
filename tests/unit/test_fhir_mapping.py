"""The FHIR mapping (contract: service-interface.md, "FHIR R4 view"): statuses by the contract's
tables, resources that R4B's models validate, MedicationDispense per fill as a pure function of
the facts whatever their arrival order, and the history one version per recorded fact."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.facts import Fact, FactKind
from domain.instants import sortable_instant
from domain.prescription import RecordedFact
from domain.state import derive_state
from interfaces.fhir.bundles import history, operation_outcome, searchset
from interfaces.fhir.mapping import (
    EVENT_SOURCE,
    medication_dispenses,
    medication_request,
    medication_request_versions,
    patient,
)
from interfaces.simulator import lifecycle as simulated_lifecycle
from tests.fhir_models import validated
from tests.helpers import EXAMPLES, LIFECYCLES, load_example, load_lifecycle
from tests.unit.test_state import fact, fact_of

BASE = "http://fhir.test/fhir/r4"
RECORDED = "2026-12-01T08:00:00.000000Z"

# The contract's table, written out again: the state's status -> MedicationRequest.status.
REQUEST_STATUS = {
    None: "unknown",
    **dict.fromkeys(
        [
            "received",
            "sent",
            "processing",
            "dispensed",
            "ready_for_pickup",
            "shipped",
            "delivered",
        ],
        "active",
    ),
    "on_hold": "on-hold",
    "error": "on-hold",
    "completed": "completed",
    "cancelled": "cancelled",
    "transferred": "stopped",
    "rejected": "stopped",
}
# The contract's table: a fill's latest status-changing fact -> MedicationDispense.status.
FILL_STATUS = {
    "processing": "preparation",
    "on_hold": "on-hold",
    **dict.fromkeys(["dispensed", "ready_for_pickup", "shipped"], "in-progress"),
    "delivered": "completed",
}
# Each lifecycle's fills as the contract's fill table says they end.
LIFECYCLE_FILLS = {
    "mail-order-with-change": {1: "completed"},
    "pickup-refills-renewal": {1: "completed", 2: "completed"},
    "cancelled-on-request": {1: "cancelled"},
    "error-then-transferred": {1: "stopped"},
}


def request_of(facts: list[Fact], subject: str = "rx") -> dict:
    return medication_request(derive_state(subject, facts).as_dict(), RECORDED)


def fill_statuses(facts: list[Fact], subject: str = "rx") -> dict[int, str]:
    return {
        int(d["id"].rsplit(".", 1)[1]): d["status"] for d in medication_dispenses(subject, facts)
    }


@pytest.mark.parametrize("status", sorted(REQUEST_STATUS, key=str))
def test_each_state_status_maps_as_the_contracts_table_says(status):
    state = derive_state("rx", []).as_dict() | {"status": status}
    resource = validated(medication_request(state, RECORDED))
    assert resource["status"] == REQUEST_STATUS[status]
    if status in ("transferred", "rejected"):
        assert resource["statusReason"] == {"text": status}
    else:
        assert "statusReason" not in resource


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_payload_alone_gives_resources_that_validate(path):
    payload = load_example(path.stem)
    facts = [fact_of(payload)]
    state = derive_state(payload["subject"], facts)
    resource = validated(request_of(facts, payload["subject"]))
    assert resource["status"] == REQUEST_STATUS[state.status]
    for dispense in medication_dispenses(payload["subject"], facts):
        validated(dispense)


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
def test_each_lifecycle_gives_resources_that_validate_with_the_contracts_statuses(path):
    lifecycle = load_lifecycle(path)
    subject = lifecycle["subject"]
    facts = [fact_of(e) for e in lifecycle["events"]]
    resource = validated(request_of(facts, subject))
    assert resource["status"] == REQUEST_STATUS[lifecycle["expected_final_state"]["status"]]
    assert resource["identifier"] == [{"system": "urn:drx:prescription-id", "value": subject}]
    dispenses = medication_dispenses(subject, facts)
    validated(searchset(BASE, dispenses, BASE + "/MedicationDispense", None, len(dispenses)))
    assert {int(d["id"].rsplit(".", 1)[1]): d["status"] for d in dispenses} == LIFECYCLE_FILLS[
        path.stem
    ]
    state = derive_state(subject, facts).as_dict()
    validated(patient(state["patient"], RECORDED))


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_arrival_order_with_duplicates_gives_the_same_dispenses(path, data):
    lifecycle = load_lifecycle(path)
    facts = [fact_of(e) for e in lifecycle["events"]]
    repeats = data.draw(st.lists(st.sampled_from(facts), max_size=len(facts)))
    arrival = data.draw(st.permutations(facts + repeats))
    subject = lifecycle["subject"]
    assert medication_dispenses(subject, arrival) == medication_dispenses(subject, facts)
    assert request_of(arrival, subject) == request_of(facts, subject)


def simulated_fills(events: list[dict]) -> dict[int, str]:
    """A simulated story's fills by the contract's table: in the simulator's stories, facts come
    in the order they happened and no fill is ever cancelled, rejected or transferred, so each
    fill's status is its last fact's."""
    fills = {}
    for event in events:
        if "fill_number" in event["data"]:
            fills[event["data"]["fill_number"]] = FILL_STATUS[event["type"].rsplit(".", 1)[1]]
    return fills


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), data=st.data())
def test_random_lifecycles_in_any_order_give_the_same_valid_resources(seed, data):
    """The simulator's lifecycles (every kind of fact, in realistic stories), caught at any
    point of their story."""
    story = simulated_lifecycle(random.Random(seed), "unit", seed)
    events = story[: data.draw(st.integers(1, len(story)))]
    facts = [fact_of(e) for e in events]
    arrival = data.draw(st.permutations(facts + data.draw(st.lists(st.sampled_from(facts)))))
    subject = events[0]["subject"]
    resource = validated(request_of(arrival, subject))
    assert resource["status"] == REQUEST_STATUS[derive_state(subject, facts).status]
    dispenses = medication_dispenses(subject, arrival)
    for dispense in dispenses:
        validated(dispense)
    assert fill_statuses(arrival, subject) == simulated_fills(events)


def test_a_fills_status_follows_its_latest_status_changing_fact():
    processing = fact(FactKind.PROCESSING, 0, fill_number=1, stage="filling")
    on_hold = fact(
        FactKind.ON_HOLD, 5, fill_number=1, reason={"text": "prior auth", "category": "prior_auth"}
    )
    dispensed = fact(FactKind.DISPENSED, 10, fill_number=1, refills_remaining=1)
    ready = fact(FactKind.READY_FOR_PICKUP, 15, fill_number=1)
    shipped = fact(FactKind.SHIPPED, 15, fill_number=1, carrier="c", tracking_number="t")
    delivered = fact(FactKind.DELIVERED, 20, fill_number=1, handover="pickup")
    assert fill_statuses([processing]) == {1: "preparation"}
    assert fill_statuses([processing, on_hold]) == {1: "on-hold"}
    [held] = medication_dispenses("rx", [processing, on_hold])
    assert held["statusReasonCodeableConcept"] == {"text": "prior auth"}
    for step in (dispensed, ready, shipped):
        assert fill_statuses([processing, on_hold, step]) == {1: "in-progress"}
    assert fill_statuses([processing, dispensed, delivered]) == {1: "completed"}


def test_a_cancel_or_a_rejection_during_a_fill_ends_it_but_not_a_completed_one():
    first = [
        fact(FactKind.DISPENSED, 0, fill_number=1, refills_remaining=1),
        fact(FactKind.DELIVERED, 5, fill_number=1, handover="pickup"),
    ]
    second = fact(FactKind.PROCESSING, 10, fill_number=2, stage="billing")
    cancelled = fact(FactKind.CANCELLED, 20, cancelled_by="prescriber")
    rejected = fact(FactKind.REJECTED, 20, retryable=False, reason={"text": "refused"})
    assert fill_statuses([*first, second, cancelled]) == {1: "completed", 2: "cancelled"}
    assert fill_statuses([*first, second, rejected]) == {1: "completed", 2: "declined"}
    assert fill_statuses([*first, cancelled]) == {1: "completed"}
    assert fill_statuses([cancelled]) == {}


def test_a_retryable_rejection_declines_the_fill_until_it_goes_on():
    processing = fact(FactKind.PROCESSING, 0, fill_number=1, stage="billing")
    error = fact(FactKind.REJECTED, 5, retryable=True, reason={"text": "timeout"})
    again = fact(FactKind.PROCESSING, 10, "evt_again", fill_number=1, stage="filling")
    assert fill_statuses([processing, error]) == {1: "declined"}
    assert fill_statuses([processing, error, again]) == {1: "preparation"}


def test_a_fill_fact_after_a_terminal_one_changes_no_fill():
    facts = [
        fact(FactKind.PROCESSING, 0, fill_number=1, stage="filling"),
        fact(FactKind.TRANSFERRED, 5, to_pharmacy={"ncpdp_id": "1"}),
        fact(FactKind.DELIVERED, 10, fill_number=1, handover="delivery"),
        fact(FactKind.PROCESSING, 15, "evt_late", fill_number=2, stage="filling"),
    ]
    [stopped] = medication_dispenses("rx", facts)
    assert (stopped["status"], stopped["statusReasonCodeableConcept"]) == (
        "stopped",
        {"text": "transferred"},
    )


def test_a_dispense_carries_the_fill_its_quantity_and_its_times():
    received = fact_of(load_example("received"))
    dispensed = fact(
        FactKind.DISPENSED,
        60 * 24 * 3,
        fill_number=2,
        dispense_status="partially_dispensed",
        quantity_dispensed=15,
        refills_remaining=0,
        dispensed_at="2025-03-07T10:00:00Z",
        ndc="12345-6789-01",
    )
    delivered = fact(
        FactKind.DELIVERED,
        60 * 24 * 4,
        fill_number=2,
        handover="delivery",
        delivered_at="2025-03-08T10:00:00+01:00",
    )
    [dispense] = medication_dispenses("rx", [delivered, received, dispensed])
    validated(dispense)
    assert dispense["id"] == "rx.2"
    assert dispense["type"]["coding"][0]["code"] == "RFP"  # a refill, partly filled
    assert dispense["quantity"] == {"value": 15, "unit": "tablet"}
    assert dispense["whenPrepared"] == "2025-03-07T10:00:00Z"
    assert dispense["whenHandedOver"] == "2025-03-08T09:00:00Z"
    assert {"system": "http://hl7.org/fhir/sid/ndc", "code": "12345-6789-01"} in dispense[
        "medicationCodeableConcept"
    ]["coding"]
    assert dispense["authorizingPrescription"] == [{"reference": "MedicationRequest/rx"}]
    assert dispense["subject"]["reference"] == "Patient/drx-pt-TEST01"
    assert dispense["performer"][0]["actor"]["identifier"]["system"] == "urn:drx:ncpdp-id"


def test_a_provisional_prescription_is_unknown_with_its_required_elements_absent():
    resource = validated(request_of([fact(FactKind.UPDATED, 0, notes="n")]))
    assert resource["status"] == "unknown"
    absent = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
    assert resource["subject"]["extension"][0]["url"] == absent
    assert resource["medicationCodeableConcept"]["extension"][0]["url"] == absent


def test_the_medication_request_says_what_the_contract_maps():
    resource = request_of([fact_of(load_example("received"))], "drx_rx_7Q2M9K")
    assert resource["medicationCodeableConcept"] == {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076"}],
        "text": "Lisinopril 10 mg oral tablet",
    }
    assert resource["subject"] == {
        "reference": "Patient/drx-pt-TEST01",
        "identifier": {"system": "urn:drx:patient-id", "value": "drx_pt_TEST01"},
    }
    assert resource["requester"]["identifier"] == {
        "system": "http://hl7.org/fhir/sid/us-npi",
        "value": "1234567893",
    }
    assert resource["dosageInstruction"] == [{"text": "Take 1 tablet by mouth once daily"}]
    request = resource["dispenseRequest"]
    assert (request["quantity"]["value"], request["numberOfRepeatsAllowed"]) == (30, 2)
    assert request["performer"]["identifier"] == {"system": "urn:drx:ncpdp-id", "value": "0000000"}
    assert resource["meta"] == {"versionId": "1", "lastUpdated": RECORDED}


def test_a_patient_id_too_long_for_a_fhir_id_is_referenced_by_identifier_only():
    long_id = "p" * 65
    received = fact(FactKind.RECEIVED, 0, patient={"drx_patient_id": long_id})
    assert request_of([received])["subject"] == {
        "identifier": {"system": "urn:drx:patient-id", "value": long_id}
    }


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
def test_the_history_is_one_version_per_recorded_fact_with_its_event(path):
    lifecycle = load_lifecycle(path)
    subject = lifecycle["subject"]
    facts = [fact_of(e) for e in reversed(lifecycle["events"])]  # recorded in another order
    start = datetime(2026, 12, 1, tzinfo=UTC)
    recorded = [RecordedFact(n + 1, start + timedelta(seconds=n), f) for n, f in enumerate(facts)]
    versions = medication_request_versions(subject, recorded)
    bundle = validated(history(BASE, versions))
    assert bundle["total"] == len(facts)
    newest_first = [entry["resource"] for entry in bundle["entry"]]
    assert [v["meta"]["versionId"] for v in newest_first] == [
        str(n) for n in range(len(facts), 0, -1)
    ]
    for version, recorded_fact in zip(versions, recorded, strict=True):
        assert version["meta"]["source"] == EVENT_SOURCE + recorded_fact.fact.event_id
        assert version["meta"]["lastUpdated"] == sortable_instant(recorded_fact.recorded_at)
        as_of = derive_state(subject, facts[: recorded_fact.number]).as_dict()
        assert version == medication_request(
            as_of, sortable_instant(recorded_fact.recorded_at), recorded_fact.fact.event_id
        )
    assert bundle["entry"][-1]["request"] == {"method": "POST", "url": "MedicationRequest"}
    assert bundle["entry"][0]["response"]["etag"] == f'W/"{len(facts)}"'


def test_an_event_id_that_is_no_uri_is_percent_encoded_in_the_source():
    resource = medication_request(derive_state("rx", []).as_dict(), RECORDED, "evt 1/é")
    assert resource["meta"]["source"] == "urn:drx:event:evt%201%2F%C3%A9"


def test_an_error_is_an_operation_outcome():
    outcome = validated(operation_outcome(400, "invalid", ["status: wrong", "_count: too big"]))
    assert [issue["code"] for issue in outcome["issue"]] == ["invalid", "invalid"]
    assert validated(operation_outcome(500, "fault"))["issue"][0]["code"] == "exception"
