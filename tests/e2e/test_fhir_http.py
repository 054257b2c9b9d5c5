"""The FHIR R4 paths over HTTP on SQLite and PostgreSQL: every lifecycle delivered in random
orders with duplicates, and every example payload, give resources that validate (fhir.resources'
R4B models) with the statuses of the contract's tables; searches page correctly while facts
arrive; errors are OperationOutcomes; the PHI access log names the DRx ids."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from domain.handlers import Outcome
from domain.ids import prescription_id
from infrastructure.access_log import AccessFilter
from interfaces.fhir.mapping import EVENT_SOURCE, medication_dispenses
from interfaces.simulator import lifecycle as simulated_lifecycle
from tests.fhir_models import validated
from tests.helpers import (
    EXAMPLES,
    LIFECYCLES,
    deliver,
    load_example,
    load_lifecycle,
    post_signed,
    relabelled,
    serving,
    settle,
)
from tests.unit.test_fhir_mapping import LIFECYCLE_FILLS, REQUEST_STATUS, simulated_fills
from tests.unit.test_state import fact_of

FHIR = "/fhir/r4"
FHIR_JSON = "application/fhir+json"


def fhir(client, path: str, **params) -> dict:
    answer = client.get(FHIR + path, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == FHIR_JSON
    return validated(answer.json())


def refusal(client, path: str, status: int, **kwargs) -> dict:
    answer = client.get(FHIR + path, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == FHIR_JSON
    outcome = validated(answer.json())
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def ids_in(bundle: dict) -> list[str]:
    return [entry["resource"]["identifier"][0]["value"] for entry in bundle.get("entry", [])]


def fills_of(bundle: dict) -> dict[int, str]:
    return {
        int(e["resource"]["id"].rsplit(".", 1)[1]): e["resource"]["status"]
        for e in bundle.get("entry", [])
    }


def received_for(subject: str, patient_id: str = "drx_pt_TEST01") -> dict:
    payload = load_example("received")
    payload["data"]["patient"]["drx_patient_id"] = patient_id
    return {**payload, "id": f"evt_received_{subject}", "subject": subject}


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
def test_a_lifecycle_in_any_order_with_duplicates_gives_valid_resources_and_statuses(client, path):
    lifecycle = load_lifecycle(path)
    for seed in range(3):
        rng = random.Random(seed)
        events = relabelled(lifecycle, f"s{seed}")
        arrival = events + rng.sample(events, k=len(events) // 2)
        rng.shuffle(arrival)
        for event in arrival:
            assert post_signed(client, event).is_success
        settle(client)
        subject = events[0]["subject"]
        fhir_id = subject.replace("_", "-")
        expected = lifecycle["expected_final_state"]

        resource = fhir(client, f"/MedicationRequest/{fhir_id}")
        assert resource["status"] == REQUEST_STATUS[expected["status"]]
        assert resource["meta"]["versionId"] == str(expected["version"])

        versions = fhir(client, f"/MedicationRequest/{fhir_id}/_history")
        recorded = list(dict.fromkeys(e["id"] for e in arrival))  # first arrival recorded
        sources = [e["resource"]["meta"]["source"] for e in reversed(versions["entry"])]
        assert sources == [EVENT_SOURCE + event_id for event_id in recorded]
        assert versions["entry"][0]["resource"] == resource | {
            "meta": resource["meta"] | {"source": EVENT_SOURCE + recorded[-1]}
        }
        for entry in versions["entry"]:  # each version read alone (vread) is the same
            version_id = entry["resource"]["meta"]["versionId"]
            alone = client.get(f"{FHIR}/MedicationRequest/{fhir_id}/_history/{version_id}")
            assert alone.status_code == 200, alone.text
            assert alone.json() == entry["resource"]
            assert alone.headers["etag"] == f'W/"{version_id}"'

        dispenses = fhir(client, "/MedicationDispense", prescription=f"MedicationRequest/{fhir_id}")
        assert fills_of(dispenses) == LIFECYCLE_FILLS[path.stem]

        person = fhir(client, "/" + resource["subject"]["reference"])
        assert person["identifier"][0]["value"] == "drx_pt_TEST01"


def test_random_lifecycles_in_any_order_with_duplicates_give_valid_resources(client):
    """The simulator's lifecycles, each caught at some point of its story: the
    MedicationRequest's status by the table from the state's, the fills by the fill table."""
    rng = random.Random(11)
    stories = [simulated_lifecycle(rng, "fhir", n) for n in range(20)]
    lifecycles = [story[: rng.randint(1, len(story))] for story in stories]
    arrival = [event for events in lifecycles for event in events]
    arrival += rng.sample(arrival, k=len(arrival) // 3)
    rng.shuffle(arrival)
    for event in arrival:
        assert post_signed(client, event).is_success
    settle(client)
    for events in lifecycles:
        subject = events[0]["subject"]
        state = client.get(f"/prescriptions/{subject}").json()
        resource = fhir(client, f"/MedicationRequest/{subject.replace('_', '-')}")
        assert resource["status"] == REQUEST_STATUS[state["status"]]
        dispenses = fhir(client, "/MedicationDispense", prescription=resource["id"])
        assert fills_of(dispenses) == simulated_fills(events)
        facts = [fact_of(event) for event in events]
        assert [e["resource"] for e in dispenses["entry"]] == medication_dispenses(subject, facts)


def test_each_example_payload_alone_gives_a_valid_medication_request(client):
    """Each example on a prescription of its own (one store for all: one app to start)."""
    for path in EXAMPLES:
        payload = load_example(path.stem)
        subject = f"drx_rx_alone_{path.stem}"
        assert post_signed(client, {**payload, "subject": subject}).is_success, path.stem
    settle(client)
    for path in EXAMPLES:
        subject = f"drx_rx_alone_{path.stem}"
        state = client.get(f"/prescriptions/{subject}").json()
        resource = fhir(client, f"/MedicationRequest/{subject.replace('_', '-')}")
        assert resource["status"] == REQUEST_STATUS[state["status"]], path.stem
        fhir(client, "/MedicationDispense", prescription=resource["id"])


def test_a_search_filters_by_identifier_patient_status_and_last_updated(client):
    for subject, patient in (("drx_rx_a", "drx_pt_1"), ("drx_rx_b", "drx_pt_2")):
        assert post_signed(client, received_for(subject, patient)).is_success
    cancel = {**load_example("cancelled"), "id": "evt_cancel_b", "subject": "drx_rx_b"}
    assert post_signed(client, cancel).is_success
    settle(client)
    updated_a = fhir(client, "/MedicationRequest/drx-rx-a")["meta"]["lastUpdated"]
    search = "/MedicationRequest"
    assert ids_in(fhir(client, search)) == ["drx_rx_a", "drx_rx_b"]
    assert ids_in(fhir(client, search, identifier="urn:drx:prescription-id|drx_rx_b")) == [
        "drx_rx_b"
    ]
    assert ids_in(fhir(client, search, identifier="urn:other|drx_rx_b")) == []
    assert ids_in(fhir(client, search, patient="Patient/drx-pt-1")) == ["drx_rx_a"]
    assert ids_in(fhir(client, search, status="cancelled")) == ["drx_rx_b"]
    assert ids_in(fhir(client, search, status="active,stopped")) == ["drx_rx_a"]
    assert ids_in(fhir(client, search, status="unknown")) == []
    assert ids_in(fhir(client, search, _lastUpdated=f"le{updated_a}")) == ["drx_rx_a"]
    assert ids_in(fhir(client, search, _lastUpdated=f"gt{updated_a}")) == ["drx_rx_b"]
    assert ids_in(fhir(client, search, _lastUpdated="lt2000-01-01")) == []
    assert fhir(client, search, status="cancelled")["total"] == 1


def test_a_provisional_prescription_is_unknown_and_found_by_that_status(client):
    shipped = {**load_example("shipped"), "subject": "drx_rx_early"}
    assert post_signed(client, shipped).is_success
    assert post_signed(client, {**load_example("updated"), "subject": "drx_rx_nothing"}).is_success
    settle(client)
    assert fhir(client, "/MedicationRequest/drx-rx-early")["status"] == "active"
    assert ids_in(fhir(client, "/MedicationRequest", status="unknown")) == ["drx_rx_nothing"]


def test_paging_a_search_of_300_prescriptions_sees_each_once_while_facts_arrive(client):
    subjects = [f"drx_rx_page_{n:04d}" for n in range(300)]
    app = client.app.state.parts.prescriptions
    for subject in subjects:  # straight into the store: the webhook is tested elsewhere
        assert deliver(app, received_for(subject)) is Outcome.ACCEPTED
    settle(client)
    rng = random.Random(7)
    seen: list[str] = []
    url: str | None = f"{FHIR}/MedicationRequest?_count=29"
    pages = 0
    while url is not None:
        bundle = client.get(url)  # plain httpx, following the next link as given
        assert bundle.status_code == 200, bundle.text
        page = bundle.json() if pages else validated(bundle.json())  # resources: tested above
        seen += ids_in(page)
        pages += 1
        # Between pages: facts about prescriptions seen and not yet seen, and new prescriptions
        # on both sides of the page boundary.
        for subject in rng.sample(subjects, 5):
            event = {**load_example("sent"), "id": f"evt_sent_{subject}_{pages}"}
            assert post_signed(client, {**event, "subject": subject}).is_success
        for new in (f"drx_rx_page_0000_{pages}", f"drx_rx_page_9999_{pages}"):
            assert post_signed(client, received_for(new)).is_success
        settle(client)
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert pages == 11
    assert len(seen) == len(set(seen)), "a prescription was seen twice"
    assert [s for s in seen if s in set(subjects)] == subjects


def test_a_prescription_id_too_long_to_escape_is_named_by_its_aggregate_id(client):
    subject = "drx_rx_" + "long" * 20
    assert post_signed(client, {**load_example("received"), "subject": subject}).is_success
    dispensed = {**load_example("dispensed"), "subject": subject}
    assert post_signed(client, dispensed).is_success
    settle(client)
    [entry] = fhir(client, "/MedicationRequest", identifier=subject)["entry"]
    fhir_id = entry["resource"]["id"]
    assert fhir_id.startswith(".Z")
    assert fhir(client, f"/MedicationRequest/{fhir_id}")["identifier"][0]["value"] == subject
    assert fhir(client, f"/MedicationRequest/{fhir_id}/_history")["total"] == 2
    assert fills_of(fhir(client, "/MedicationDispense", prescription=fhir_id)) == {1: "in-progress"}
    # A prescription whose id escapes has no aggregate-form id.
    assert post_signed(client, received_for("drx_rx_short")).is_success
    settle(client)
    refusal(client, f"/MedicationRequest/.Z{prescription_id('drx_rx_short').hex}", 404)


def test_errors_are_operation_outcomes(client):
    assert post_signed(client, load_example("received")).is_success
    settle(client)
    refusal(client, "/MedicationRequest/drx-rx-unknown", 404)
    refusal(client, "/MedicationRequest/drx-rx-unknown/_history", 404)
    refusal(client, "/MedicationRequest/drx.5Frx.5F7Q2M9K", 404)  # not our spelling of it
    refusal(client, "/Patient/drx-pt-unknown", 404)
    refusal(client, "/Observation/1", 404)
    for version in ("0", "2", "01", "1.0", "x", "9" * 40):  # it has version 1 only
        refusal(client, f"/MedicationRequest/drx-rx-7Q2M9K/_history/{version}", 404)
    refusal(client, "/MedicationRequest/drx-rx-unknown/_history/1", 404)
    refusal(client, "/MedicationRequest/drx-rx-%00", 400)  # refused before routing, as FHIR
    refusal(client, "/MedicationRequest", 400, params={"identifier": "drx\x00"})
    refusal(client, "/MedicationRequest/drx-rx-7Q2M9K/_history/1", 400, params={"_format": "xml"})
    posted = client.post(FHIR + "/MedicationRequest", json={"resourceType": "MedicationRequest"})
    assert (posted.status_code, posted.headers["content-type"]) == (405, FHIR_JSON)
    assert set(posted.headers["allow"].split(", ")) == {"GET", "OPTIONS"}
    validated(posted.json())
    outcome = refusal(client, "/MedicationRequest", 400, params={"name": "Testy"})
    assert "Testy" not in str(outcome)
    refusal(client, "/MedicationRequest", 400, params={"_count": "0"})
    refusal(client, "/MedicationRequest/drx-rx-7Q2M9K", 400, params={"_format": "xml"})
    refusal(client, "/MedicationDispense", 400)
    assert fhir(client, "/MedicationDispense", prescription="drx-rx-unknown")["total"] == 0
    refusal(client, "/metadata", 401, headers={"Authorization": "Bearer nope"})


def test_fhir_paths_need_the_read_scope(settings):
    keys = ("reader:drx_reader_key_0001:read", "operator:drx_operator_key_0001:operate")
    with serving(replace(settings, api_keys=keys)) as client:
        operator = {"Authorization": "Bearer drx_operator_key_0001"}
        outcome = refusal(client, "/MedicationRequest", 403, headers=operator)
        assert outcome["issue"][0]["code"] == "forbidden"
        reader = {"Authorization": "Bearer drx_reader_key_0001"}
        assert client.get(FHIR + "/MedicationRequest", headers=reader).status_code == 200


def test_each_answer_with_patient_data_is_in_the_access_log_by_drx_ids(client):
    assert post_signed(client, load_example("received")).is_success
    settle(client)
    for path in (
        "/MedicationRequest/drx-rx-7Q2M9K",
        "/MedicationRequest/drx-rx-7Q2M9K/_history",
        "/MedicationRequest/drx-rx-7Q2M9K/_history/1",
        "/MedicationRequest?patient=drx-pt-TEST01",
        "/MedicationDispense?prescription=drx-rx-7Q2M9K",
        "/Patient/drx-pt-TEST01",
        "/MedicationRequest/drx-rx-unknown",
        "/metadata",  # no patient data: not logged
    ):
        client.get(FHIR + path)
    parts = client.app.state.parts
    parts.access_log.flush()
    entries, _ = parts.access.find(AccessFilter(), 50, None)
    logged = [(e["path"], e["status"], e["prescription_ids"], e["patient_ids"]) for e in entries]
    rx, pt = ["drx_rx_7Q2M9K"], ["drx_pt_TEST01"]
    assert logged == [
        (f"{FHIR}/MedicationRequest/drx-rx-7Q2M9K", 200, rx, pt),
        (f"{FHIR}/MedicationRequest/drx-rx-7Q2M9K/_history", 200, rx, pt),
        (f"{FHIR}/MedicationRequest/drx-rx-7Q2M9K/_history/1", 200, rx, pt),
        (f"{FHIR}/MedicationRequest?patient=drx-pt-TEST01", 200, rx, pt),
        (f"{FHIR}/MedicationDispense?prescription=drx-rx-7Q2M9K", 200, rx, []),
        (f"{FHIR}/Patient/drx-pt-TEST01", 200, [], pt),
        (f"{FHIR}/MedicationRequest/drx-rx-unknown", 404, [], []),
    ]


def test_the_capability_statement_lists_exactly_the_fhir_paths(client):
    statement = fhir(client, "/metadata")
    assert statement["fhirVersion"] == "4.0.1"
    listed = {
        (resource["type"], interaction["code"])
        for resource in statement["rest"][0]["resource"]
        for interaction in resource["interaction"]
    }
    interaction_of = {
        "/{fhir_id:str}": "read",
        "/{fhir_id:str}/_history": "history-instance",
        "/{fhir_id:str}/_history/{version_id:str}": "vread",
        "": "search-type",
    }
    served = set()
    for route in client.app.routes:
        if not route.path.startswith(FHIR + "/") or route.path == FHIR + "/metadata":
            continue
        kind, _, rest = route.path.removeprefix(FHIR + "/").partition("/")
        served.add((kind, interaction_of["/" + rest if rest else ""]))
    assert listed == served
