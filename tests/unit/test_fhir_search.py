"""The FHIR searches' parameters: what each asks of the read table, and the 400s, which name
the parameter and never echo its value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from interfaces.fhir.search import dispense_search, prescription_search
from interfaces.http.errors import ProblemError


def search(**params: str | list[str]):
    query = [
        (name, value)
        for name, values in params.items()
        for value in (values if isinstance(values, list) else [values])
    ]
    return prescription_search(query)


def refused(query: list[tuple[str, str]]) -> str:
    with pytest.raises(ProblemError) as raised:
        prescription_search(query)
    assert raised.value.status == 400
    return raised.value.detail


def test_no_parameter_is_every_prescription_fifty_a_page():
    found = search()
    assert (found.where.statuses, found.where.updated, found.count, found.cursor) == (
        None,
        (),
        50,
        None,
    )
    assert not found.nothing


def test_an_identifier_is_a_prescription_id_of_our_system_only():
    assert search(identifier="drx_rx_1").where.prescription_id == "drx_rx_1"
    assert search(identifier="urn:drx:prescription-id|a|b").where.prescription_id == "a|b"
    assert search(identifier="http://other|drx_rx_1").nothing
    assert search(identifier="|drx_rx_1").nothing
    assert "identifier" in refused([("identifier", "urn:drx:prescription-id|")])


def test_a_patient_is_a_patient_id_with_or_without_its_type():
    assert search(patient="Patient/drx-pt-1").where.patient_id == "drx_pt_1"
    assert search(patient="drx-pt-1").where.patient_id == "drx_pt_1"
    assert search(patient="drx.5Fpt").nothing  # no id of ours
    assert "patient" in refused([("patient", "Practitioner/1")])


def test_statuses_are_any_of_the_state_statuses_their_codes_stand_for():
    assert search(status="stopped").where.statuses == {"transferred", "rejected"}
    assert search(status="unknown,cancelled").where.statuses == {None, "cancelled"}
    assert search(status="draft").nothing
    assert "status must be" in refused([("status", "active,bogus")])


@pytest.mark.parametrize(
    ("value", "bound"),
    [
        ("gt2025-03-04T10:00:00Z", (">", datetime(2025, 3, 4, 10, tzinfo=UTC))),
        ("ge2025-03-04T11:00:00+01:00", (">=", datetime(2025, 3, 4, 10, tzinfo=UTC))),
        ("lt2025-03-04", ("<", datetime(2025, 3, 4, tzinfo=UTC))),
        ("le2025-03-04", ("<", datetime(2025, 3, 5, tzinfo=UTC))),
        ("gt2025-03-04", (">=", datetime(2025, 3, 5, tzinfo=UTC))),
        ("ge2025-03-04", (">=", datetime(2025, 3, 4, tzinfo=UTC))),
    ],
)
def test_last_updated_bounds_when_the_last_fact_was_recorded(value, bound):
    assert search(_lastUpdated=value).where.updated == (bound,)


def test_an_offsets_plus_sent_unescaped_is_taken_back():
    found = search(_lastUpdated="gt2025-03-04T11:00:00 01:00")
    assert found.where.updated == ((">", datetime(2025, 3, 4, 10, tzinfo=UTC)),)


def test_last_updated_twice_is_a_range():
    found = search(_lastUpdated=["ge2025-03-01", "lt2025-04-01"])
    assert [comparison for comparison, _ in found.where.updated] == [">=", "<"]


@pytest.mark.parametrize(
    "value", ["2025-03-04", "eq2025-03-04", "gt2025-13-01", "gt2025-03-04T10:00:00", "gtsoon"]
)
def test_a_last_updated_without_a_prefix_or_a_date_is_refused(value):
    assert "_lastUpdated" in refused([("_lastUpdated", value)])


@pytest.mark.parametrize("value", ["0", "501", "-1", "ten", "\u0661"])
def test_count_is_from_1_to_500(value):
    assert "_count" in refused([("_count", value)])


def test_count_and_cursor_page_the_search():
    found = search(_count="7", _cursor="drx_rx_9")
    assert (found.count, found.cursor) == (7, "drx_rx_9")
    assert search(_cursor="").cursor is None


def test_an_unknown_parameter_or_modifier_is_refused_by_name_not_value():
    detail = refused([("status:not", "active"), ("name", "Testy McExample")])
    assert detail == "not a search parameter of this resource: name, status:not"


def test_a_parameter_given_twice_is_refused():
    assert "status" in refused([("status", "active"), ("status", "on-hold")])
    assert "_lastUpdated" in refused([("_lastUpdated", "gt2025-01-01")] * 3)


def test_a_dispense_search_names_its_medication_request():
    assert dispense_search([("prescription", "MedicationRequest/drx-rx-1")]) == "drx-rx-1"
    assert dispense_search([("prescription", "drx-rx-1")]) == "drx-rx-1"
    for query in ([], [("prescription", "x"), ("_count", "5")], [("patient", "p")]):
        with pytest.raises(ProblemError):
            dispense_search(query)
