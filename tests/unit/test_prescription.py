"""The Prescription aggregate: an event class per kind of fact, repeats refused, state derived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.facts import Fact, FactKind
from domain.ids import prescription_id
from domain.prescription import EVENT_CLASS_FOR, Prescription

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_each_kind_of_fact_has_its_own_past_tense_event_class():
    assert set(EVENT_CLASS_FOR) == set(FactKind)
    assert len(set(EVENT_CLASS_FOR.values())) == len(FactKind)
    assert EVENT_CLASS_FOR[FactKind.SHIPPED] is Prescription.Shipped


def test_the_id_comes_from_the_subject_so_a_repeated_create_collides():
    assert Prescription("drx_rx_1").id == Prescription("drx_rx_1").id == prescription_id("drx_rx_1")
    assert Prescription("drx_rx_1").id != Prescription("drx_rx_2").id


def test_recording_a_fact_triggers_its_event_and_a_repeat_is_refused():
    prescription = Prescription("rx")
    sent = Fact.read("evt_1", FactKind.SENT, T0, 0, {"transmission": {"status": "sent"}})
    assert prescription.record(sent) is True
    assert prescription.record(sent) is False
    events = prescription.collect_events()
    assert [type(e).__name__ for e in events] == ["Opened", "Sent"]
    assert prescription.fact_count == 1
    assert prescription.state().status == "sent"


def test_state_as_of_an_instant_uses_only_facts_recorded_by_then():
    prescription = Prescription("rx")
    prescription.record(Fact.read("evt_1", FactKind.SENT, T0))
    first_recorded = prescription.recorded[0].recorded_at
    prescription.record(
        Fact.read(
            "evt_2",
            FactKind.PROCESSING,
            T0 + timedelta(hours=1),
            0,
            {"fill_number": 1, "stage": "filling"},
        )
    )
    assert prescription.state(recorded_until=first_recorded).status == "sent"
    assert prescription.state().status == "processing"
    assert prescription.state(recorded_until=first_recorded - timedelta(seconds=1)).version == 0
