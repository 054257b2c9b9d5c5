"""The Prescription aggregate: an event class per kind of fact, state derived, and a load from its
last snapshot that gives what a load of every event gives, whatever the arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.application import Prescriptions
from domain.facts import Fact, FactKind
from domain.ids import prescription_id
from domain.prescription import EVENT_CLASS_FOR, SNAPSHOT_INTERVAL, Prescription
from domain.state import derive_state
from tests.helpers import LIFECYCLES, load_lifecycle
from tests.unit.test_state import fact_of

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_each_kind_of_fact_has_its_own_past_tense_event_class():
    assert set(EVENT_CLASS_FOR) == set(FactKind)
    assert len(set(EVENT_CLASS_FOR.values())) == len(FactKind)
    assert EVENT_CLASS_FOR[FactKind.SHIPPED] is Prescription.Shipped


def test_the_id_comes_from_the_subject_so_a_repeated_create_collides():
    assert Prescription("drx_rx_1").id == Prescription("drx_rx_1").id == prescription_id("drx_rx_1")
    assert Prescription("drx_rx_1").id != Prescription("drx_rx_2").id


def test_recording_a_fact_triggers_its_event_and_moves_the_chain_on():
    prescription = Prescription("rx")
    sent = Fact.read("evt_1", FactKind.SENT, T0, 0, {"transmission": {"status": "sent"}})
    prescription.record(sent)
    events = prescription.collect_events()
    assert [type(e).__name__ for e in events] == ["Opened", "Sent"]
    assert prescription.fact_count == 1
    assert prescription.last_hash == events[1].hash != ""
    assert prescription.state().status == "sent"


def test_a_fact_our_code_cannot_fold_fails_before_it_is_recorded(monkeypatch):
    prescription = Prescription("rx")
    prescription.record(Fact.read("evt_1", FactKind.SENT, T0))

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug in the fold")

    monkeypatch.setattr("domain.prescription.extend_state", broken)
    with pytest.raises(RuntimeError):
        prescription.record(
            Fact.read("evt_2", FactKind.PROCESSING, T0 + timedelta(hours=1), 0, {"fill_number": 1})
        )
    assert prescription.fact_count == 1
    assert [type(e).__name__ for e in prescription.collect_events()] == ["Opened", "Sent"]


def memory_app() -> Prescriptions:
    return Prescriptions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def refills(count: int, start: datetime = T0) -> list[Fact]:
    """A received fact, then monthly fills (processing, dispensed, shipped, delivered)."""
    facts = [
        Fact.read(
            "evt_rx",
            FactKind.RECEIVED,
            start,
            0,
            {"medication": {"name": "m", "refills_authorized": 99}},
        )
    ]
    kinds = [FactKind.PROCESSING, FactKind.DISPENSED, FactKind.SHIPPED, FactKind.DELIVERED]
    for n in range(count):
        kind = kinds[n % 4]
        fill = n // 4 + 1
        data: dict[str, Any] = {"fill_number": fill}
        if kind is FactKind.DISPENSED:
            data |= {"refills_remaining": 99 - fill}
        facts.append(Fact.read(f"evt_{n}", kind, start + timedelta(days=n), 0, data))
    return facts


def test_a_long_history_loads_from_its_last_snapshot_and_a_few_events():
    app = memory_app()
    facts = refills(100)
    record_one_by_one(app, "rx", facts)
    assert app.snapshots is not None
    versions = [s.originator_version for s in app.snapshots.get(prescription_id("rx"))]
    assert versions == list(range(SNAPSHOT_INTERVAL, 102, SNAPSHOT_INTERVAL))
    loaded = app.prescription("rx")
    assert loaded.version == 102
    assert loaded.fact_count == 101
    assert len(loaded._tail) == 102 - versions[-1]  # what was read after the snapshot
    assert loaded.state() == derive_state("rx", facts)
    assert loaded.last_hash == app.history("rx")[-1].hash


def test_a_late_fact_after_a_snapshot_reads_the_facts_before_it_and_is_placed_right():
    app = memory_app()
    facts = refills(40, start=T0 + timedelta(days=1))
    record_one_by_one(app, "rx", facts)
    late = Fact.read("evt_late", FactKind.ON_HOLD, T0, 0, {"fill_number": 1})
    prescription = app.prescription("rx")
    prescription.record(late)
    assert prescription.snapshot_due
    app.save(prescription)
    loaded = app.prescription("rx")
    assert loaded.state() == derive_state("rx", [*facts, late])
    assert app.snapshots is not None
    newest = next(iter(app.snapshots.get(prescription_id("rx"), desc=True, limit=1)))
    assert newest.originator_version == loaded.version  # taken at the late fact
    assert loaded._tail == []


def test_a_fact_late_among_those_since_the_snapshot_needs_no_earlier_fact():
    app = memory_app()
    facts = refills(SNAPSHOT_INTERVAL + 3)  # a snapshot, then a few facts after it
    record_one_by_one(app, "rx", facts)
    prescription = app.prescription("rx")
    assert prescription._tail  # facts after its snapshot

    def unreachable(*_: Any) -> Any:
        raise AssertionError("the facts before the snapshot were read")

    prescription.attach(unreachable)
    # Between the last two facts: late, but after everything the snapshot folded.
    between = facts[-2].occurred_at + (facts[-1].occurred_at - facts[-2].occurred_at) / 2
    late = Fact.read("evt_between", FactKind.ON_HOLD, between, 0, {"fill_number": 5})
    prescription.record(late)
    assert not prescription.snapshot_due
    assert prescription.state() == derive_state("rx", [*facts, late])


def test_without_the_snapshot_a_late_fact_is_still_placed_right():
    """A snapshot lost after a late fact (a crash between the commit and the snapshot, or a
    snapshot deleted): the tail after the older snapshot holds a fact that orders before it."""
    app = memory_app()
    facts = refills(SNAPSHOT_INTERVAL + 3, start=T0 + timedelta(days=1))
    record_one_by_one(app, "rx", facts)
    late = Fact.read("evt_late", FactKind.ON_HOLD, T0, 0, {"fill_number": 1})
    prescription = app.prescription("rx")
    prescription.record(late)
    prescription._late_for_base = False  # as if the snapshot were lost
    app.save(prescription)
    after = Fact.read("evt_after", FactKind.SHIPPED, T0 + timedelta(days=90), 0, {"fill_number": 9})
    loaded = app.prescription("rx")
    assert loaded.state() == derive_state("rx", [*facts, late])
    loaded.record(after)
    assert loaded.state() == derive_state("rx", [*facts, late, after])


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_recorded_in_any_order_with_snapshots_the_state_is_the_derived_one(path, data):
    lifecycle = load_lifecycle(path)
    subject = lifecycle["subject"]
    facts = [fact_of(e) for e in lifecycle["events"]]
    arrival = data.draw(st.permutations(facts))
    # Loaded from a snapshot at every version, from none, or now and then.
    every = data.draw(st.sampled_from([1, 2, 3, 1000]))
    app = memory_app()
    for n, fact in enumerate(arrival, start=1):
        prescription = _load(app, subject)
        prescription.record(fact)
        app.save(prescription)
        if n % every == 0 and app.snapshots is not None:
            stored = app.prescription(subject)
            newest = list(app.snapshots.get(stored.id, desc=True, limit=1))
            if not newest or newest[0].originator_version < stored.version:
                app.snapshots.put([Prescription.Snapshot.take(stored)])
    loaded = app.prescription(subject)
    assert loaded.state() == derive_state(subject, facts)
    assert loaded.fact_count == len(facts)
    assert [r.hash for r in app.history(subject)][-1] == loaded.last_hash


def record_one_by_one(app: Prescriptions, subject: str, facts: list[Fact]) -> None:
    """Each fact in a unit of work of its own: loaded, recorded, saved."""
    for fact in facts:
        prescription = _load(app, subject)
        prescription.record(fact)
        app.save(prescription)


def _load(app: Prescriptions, subject: str) -> Prescription:
    try:
        return app.prescription(subject)
    except Exception:  # not stored yet
        return Prescription(subject)
