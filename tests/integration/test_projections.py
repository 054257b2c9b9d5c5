"""Projections on real stores: exactly once, resumable, one leader, equal to the event store."""

from __future__ import annotations

import json
import logging
import random

import pytest

from domain.facts import FactKind
from infrastructure.projector import TrackingConflictError, advance, projector_for, read_position
from infrastructure.queries import PrescriptionFilter, ReadQueries
from infrastructure.read_models import DeliveriesModel
from tests.helpers import EXAMPLES, LIFECYCLES, deliver, load_example, load_lifecycle


def runner_for(prescriptions, read_db, settings, batch_size=5):
    return projector_for(prescriptions, read_db, settings, batch_size=batch_size)


def deliver_lifecycles(prescriptions, seed):
    rng = random.Random(seed)
    events = [e for path in LIFECYCLES for e in load_lifecycle(path)["events"]]
    arrival = events + rng.sample(events, k=10)
    rng.shuffle(arrival)
    for event in arrival:
        deliver(prescriptions, event)
    return {load_lifecycle(path)["subject"] for path in LIFECYCLES}


def listed(model, where, limit=500):
    """The states the read model lists, parsed."""
    return [json.loads(text) for text in model.prescriptions_json(where, limit, None).items]


def assert_read_model_equals_store(prescriptions, read_db):
    model = ReadQueries(read_db)
    items = listed(model, PrescriptionFilter())
    assert items, "the read model is empty"
    for item in items:
        assert item == prescriptions.state(item["prescription_id"]).as_dict()
    return items


def test_the_read_model_equals_what_the_store_gives_field_for_field(
    prescriptions, read_db, settings
):
    subjects = deliver_lifecycles(prescriptions, seed=7)
    runner = runner_for(prescriptions, read_db, settings)
    try:
        handled = runner.catch_up()
        items = assert_read_model_equals_store(prescriptions, read_db)
        assert {i["prescription_id"] for i in items} == subjects
        assert handled > 0
        assert all(s.lag == 0 for s in runner.status())
        assert runner.catch_up() == 0  # nothing new: nothing done
    finally:
        runner.stop()


class ProcessDiedError(BaseException):
    """Stands for the process dying mid-batch (not an error of the batch's events)."""


def test_a_batch_that_fails_midway_is_rolled_back_whole_and_applied_once_on_retry(
    prescriptions, read_db, settings, monkeypatch
):
    deliver_lifecycles(prescriptions, seed=3)
    runner = runner_for(prescriptions, read_db, settings, batch_size=1000)
    real_apply = DeliveriesModel.apply
    calls = {"n": 0}

    def crash_after_writing(self, cursor, events):
        real_apply(self, cursor, events)
        calls["n"] += 1
        if calls["n"] == 1:
            raise ProcessDiedError("the process dies before the commit")

    monkeypatch.setattr(DeliveriesModel, "apply", crash_after_writing)
    try:
        with pytest.raises(ProcessDiedError):
            runner.catch_up()
        # Both projections commit in one transaction: the one applied first is undone too.
        assert read_position(read_db, "deliveries") == 0
        assert read_position(read_db, "prescriptions") == 0
        assert read_db.query("SELECT COUNT(*) FROM rx_deliveries")[0][0] == 0
        assert read_db.query("SELECT COUNT(*) FROM rx_prescriptions")[0][0] == 0
        runner.catch_up()
        delivered = read_db.query("SELECT COUNT(*) FROM rx_deliveries")[0][0]
        stored = len({e["id"] for p in LIFECYCLES for e in load_lifecycle(p)["events"]})
        assert delivered == stored
        assert_read_model_equals_store(prescriptions, read_db)
    finally:
        runner.stop()


def test_the_tracking_position_only_moves_from_where_the_batch_started(read_db):
    with read_db.transaction() as cursor:
        advance(cursor, "probe", 0, 10)
    with pytest.raises(TrackingConflictError), read_db.transaction() as cursor:
        advance(cursor, "probe", 0, 20)  # a second runner that started from 0 too
    assert read_position(read_db, "probe") == 10


def test_a_stopped_runner_resumes_where_it_was(prescriptions, read_db, settings):
    first = runner_for(prescriptions, read_db, settings)
    deliver(prescriptions, load_example("received"))
    first.catch_up()
    position = read_position(read_db, "prescriptions")
    first.stop()
    deliver(prescriptions, load_example("sent"))
    second = runner_for(prescriptions, read_db, settings)
    try:
        assert second.catch_up() > 0
        assert read_position(read_db, "prescriptions") > position
        assert (
            json.loads(ReadQueries(read_db).prescription_json("drx_rx_7Q2M9K")[0])["status"]
            == "sent"
        )
    finally:
        second.stop()


def test_only_one_runner_leads_and_another_takes_over_when_it_stops(
    prescriptions, read_db, settings, caplog
):
    first, second = (runner_for(prescriptions, read_db, settings) for _ in range(2))
    caplog.set_level(logging.INFO)
    try:
        deliver(prescriptions, load_example("received"))
        assert first.catch_up() > 0
        deliver(prescriptions, load_example("sent"))
        assert second.catch_up() == 0  # stands by, and says so once
        assert second.catch_up() == 0
        said = [r.getMessage() for r in caplog.records if "standby" in r.getMessage()]
        assert len(said) == 1
        assert "waits as a standby" in said[0]
        first.stop()
        assert second.catch_up() > 0  # took over
    finally:
        first.stop()
        second.stop()


def test_deliveries_are_listed_in_arrival_order_with_their_outcome(
    prescriptions, read_db, settings
):
    deliver(prescriptions, load_example("received"))
    deliver(prescriptions, {**load_example("shipped"), "type": "drx.prescription.teleported"})
    deliver(prescriptions, load_example("sent"))
    runner = runner_for(prescriptions, read_db, settings)
    try:
        runner.catch_up()
    finally:
        runner.stop()
    model = ReadQueries(read_db)
    everything = model.deliveries(None, 10, None).items
    assert [(d["event_id"], d["status"]) for d in everything] == [
        ("evt_example_received", "processed"),
        ("evt_example_shipped", "parked"),
        ("evt_example_sent", "processed"),
    ]
    parked = model.deliveries("parked", 10, None).items
    assert [d["reason"] for d in parked] == ["unknown type 'drx.prescription.teleported'"]
    assert model.waiting_counts()["parked"] == 1
    first_page = model.deliveries(None, 2, None)
    assert len(first_page.items) == 2
    rest = model.deliveries(None, 2, first_page.last_key)
    assert [d["event_id"] for d in rest.items] == ["evt_example_sent"]
    assert rest.last_key is None


def test_filters_select_by_indexed_columns(prescriptions, read_db, settings):
    deliver_lifecycles(prescriptions, seed=11)
    runner = runner_for(prescriptions, read_db, settings)
    try:
        runner.catch_up()
    finally:
        runner.stop()
    model = ReadQueries(read_db)
    delivered = listed(model, PrescriptionFilter(status="delivered"))
    assert sorted(i["prescription_id"] for i in delivered) == ["drx_rx_LC0001", "drx_rx_LC0002"]
    patient = listed(model, PrescriptionFilter(patient_id="drx_pt_TEST01"))
    assert len(patient) == len(LIFECYCLES)
    assert listed(model, PrescriptionFilter(needs_review=True)) == []
    assert listed(model, PrescriptionFilter(pharmacy_ncpdp_id="none")) == []


def test_every_fact_kind_projects(prescriptions, read_db, settings):
    kinds = set()
    for path in EXAMPLES:
        payload = json.loads(path.read_text())
        kinds.add(FactKind.from_drx_type(payload["type"]))
        deliver(prescriptions, payload)
    runner = runner_for(prescriptions, read_db, settings, batch_size=3)
    try:
        runner.catch_up()
    finally:
        runner.stop()
    assert kinds == set(FactKind)
    assert (
        json.loads(ReadQueries(read_db).prescription_json("drx_rx_7Q2M9K")[0])
        == prescriptions.state("drx_rx_7Q2M9K").as_dict()
    )


def test_facts_in_order_extend_the_stored_state_and_a_late_one_derives_it_again(
    prescriptions, read_db, settings, monkeypatch
):
    """The fold's two paths, one batch per fact: in contract order the store is never read
    back; a fact that orders before the last folded has its prescription read to that
    version. Either way the row is the store's state."""
    events = load_lifecycle(LIFECYCLES[0])["events"]
    asked = []
    real = prescriptions.facts_until
    monkeypatch.setattr(prescriptions, "facts_until", lambda i, v: asked.append(v) or real(i, v))
    runner = runner_for(prescriptions, read_db, settings, batch_size=1000)
    try:
        for event in events[1:]:
            deliver(prescriptions, event)
            runner.catch_up()
        assert asked == []
        deliver(prescriptions, events[0])  # the earliest, last
        runner.catch_up()
        # Every fact, and the Opened event before them; once for each read model that folds
        # the state (the prescriptions' and the change feed's).
        assert asked == [len(events) + 1] * 2
        assert_read_model_equals_store(prescriptions, read_db)
    finally:
        runner.stop()


def test_a_row_written_before_the_fold_is_derived_again_once(prescriptions, read_db, settings):
    """Rows from before migration 0007 hold the prescription's facts where the fold now is:
    the next fact derives the state again from the store, and the row holds a fold from then."""
    events = load_lifecycle(LIFECYCLES[0])["events"]
    runner = runner_for(prescriptions, read_db, settings, batch_size=1000)
    try:
        for event in events[:-1]:
            deliver(prescriptions, event)
        runner.catch_up()
        with read_db.transaction() as cursor:
            cursor.execute("UPDATE rx_prescriptions SET fold = %s", ('[{"kind": "sent"}]',))
        deliver(prescriptions, events[-1])
        runner.catch_up()
        assert_read_model_equals_store(prescriptions, read_db)
        [(fold,)] = read_db.query("SELECT fold FROM rx_prescriptions")
        assert json.loads(fold)["last"][3] == events[-1]["id"]
    finally:
        runner.stop()


def test_insert_rows_writes_every_value_as_given(read_db):
    """Rows go to PostgreSQL as array literals written by our own code: quotes, backslashes,
    braces, commas, the word NULL, non-ASCII text, None and booleans come back exactly."""
    import uuid

    from infrastructure.database import insert_rows

    odd = [
        'say "hi"',
        "back\\slash \\\\ {x,y}",
        "NULL",
        "",
        " spaced ",
        "é\u20ac\U0001f48a",
        "a\nb",
    ]
    rows = [
        (
            str(uuid.uuid4()) if read_db.dialect == "sqlite" else uuid.uuid4(),
            n,
            text,
            n % 2 == 0,
            None,
        )
        for n, text in enumerate(odd)
    ]
    with read_db.transaction() as cursor:
        cursor.execute(
            "CREATE TABLE odd_rows (id uuid PRIMARY KEY, n bigint, t text, b boolean, absent text)"
        )
        insert_rows(
            cursor,
            read_db.dialect,
            "INSERT INTO odd_rows (id, n, t, b, absent)",
            ("uuid", "bigint", "text", "boolean", "text"),
            rows,
        )
    found = read_db.query("SELECT n, t, b, absent FROM odd_rows ORDER BY n")
    assert [(n, t, bool(b), absent) for n, t, b, absent in found] == [
        (n, text, n % 2 == 0, None) for n, text in enumerate(odd)
    ]


def test_an_idle_poll_reads_only_the_stores_head(prescriptions, read_db, settings, monkeypatch):
    runner = runner_for(prescriptions, read_db, settings)
    try:
        deliver(prescriptions, load_example("received"))
        assert runner.catch_up() > 0
        asked = []
        real_query, real_transaction = read_db.query, read_db.transaction
        monkeypatch.setattr(read_db, "query", lambda *a: asked.append("query") or real_query(*a))
        monkeypatch.setattr(
            read_db, "transaction", lambda **k: asked.append("write") or real_transaction(**k)
        )
        assert runner.catch_up() == 0
        assert asked == []  # nothing stored since: the read database was not asked
        deliver(prescriptions, load_example("sent"))
        assert runner.catch_up() > 0
        assert asked == ["write"]  # one transaction, and no query to learn where it was
        assert (
            read_position(read_db, "prescriptions") == prescriptions.recorder.max_notification_id()
        )
    finally:
        runner.stop()
