"""Deliveries into the store through the unit of work (`domain.unit_of_work.Intake`), on real
stores: a new SQLite file and a new PostgreSQL schema."""

from __future__ import annotations

import json
import logging
import random
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from domain.commands import RecordDelivery, ReplayDelivery
from domain.errors import DeliveryNotParkedError, PrescriptionNotFoundError
from domain.handlers import Outcome
from domain.ids import delivery_id
from domain.unit_of_work import MAX_BATCH_ATTEMPTS, Intake
from infrastructure.eventstore import open_prescriptions
from interfaces.drx.translator import parse_envelope, read_fact, report_digest
from tests.helpers import (
    EXAMPLES,
    LIFECYCLES,
    command_for,
    deliver,
    force_fault,
    intake_for,
    load_example,
    load_lifecycle,
    state_subset,
)


def poison(event_id, monkeypatch):
    """Force a bug in our own state code for one fact; return the fix."""
    return force_fault(monkeypatch, event_id)


def test_every_example_payload_is_accepted_and_recorded(prescriptions):
    for path in EXAMPLES:
        assert deliver(prescriptions, json.loads(path.read_text())) is Outcome.ACCEPTED
    state = prescriptions.state("drx_rx_7Q2M9K")
    assert state.version == len(EXAMPLES)
    assert [r.fact.event_id for r in prescriptions.history("drx_rx_7Q2M9K")] == [
        json.loads(p.read_text())["id"] for p in EXAMPLES
    ]


@pytest.mark.parametrize("path", LIFECYCLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("seed", [1, 2])
def test_a_lifecycle_in_any_order_with_duplicates_ends_in_its_expected_state(
    prescriptions, settings, path, seed
):
    lifecycle = load_lifecycle(path)
    events = lifecycle["events"]
    rng = random.Random(seed)
    arrival = events + rng.sample(events, k=len(events) // 2)
    rng.shuffle(arrival)
    outcomes = [deliver(prescriptions, event) for event in arrival]
    assert outcomes.count(Outcome.ACCEPTED) == len(events)
    assert outcomes.count(Outcome.DUPLICATE) == len(arrival) - len(events)
    expected = lifecycle["expected_final_state"]
    assert state_subset(prescriptions.state(lifecycle["subject"]).as_dict(), expected) == expected
    # A fresh application over the same store (a restart) rebuilds the same state.
    reopened = open_prescriptions(settings)
    try:
        assert reopened.state(lifecycle["subject"]) == prescriptions.state(lifecycle["subject"])
    finally:
        reopened.close()


def test_a_repeated_delivery_adds_no_fact(prescriptions):
    payload = load_example("sent")
    assert deliver(prescriptions, payload) is Outcome.ACCEPTED
    assert deliver(prescriptions, {**payload, "attempt": 2}) is Outcome.DUPLICATE
    assert prescriptions.state(payload["subject"]).version == 1
    assert prescriptions.prescription(payload["subject"]).version == 2  # Opened + one fact


def test_an_unreadable_delivery_is_kept_parked_with_its_reason(prescriptions):
    payload = {**load_example("shipped"), "type": "drx.prescription.teleported"}
    assert deliver(prescriptions, payload) is Outcome.PARKED
    delivery = prescriptions.delivery(payload["id"])
    assert (delivery.status, delivery.reason) == (
        "parked",
        "unknown type 'drx.prescription.teleported'",
    )
    assert json.loads(delivery.body) == payload
    with pytest.raises(PrescriptionNotFoundError):
        prescriptions.state(payload["subject"])
    assert deliver(prescriptions, payload) is Outcome.DUPLICATE


def test_a_fault_in_our_code_parks_the_delivery_the_rest_flow_and_replay_works(
    prescriptions, intake, monkeypatch, caplog
):
    fix = poison("evt_example_shipped", monkeypatch)
    assert deliver(prescriptions, load_example("received")) is Outcome.ACCEPTED
    caplog.set_level(logging.INFO)
    assert deliver(prescriptions, load_example("shipped")) is Outcome.PARKED
    logged = [r for r in caplog.records if "evt_example_shipped parked" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.ERROR]  # once, when stored
    assert deliver(prescriptions, load_example("sent")) is Outcome.ACCEPTED
    parked = prescriptions.delivery("evt_example_shipped")
    assert parked.is_parked
    assert re.fullmatch(r"internal error: RuntimeError at helpers.py:\d+", parked.reason or "")
    assert "bug forced" not in parked.reason  # type: ignore[operator]

    fix()  # the fix is deployed
    body = parked.body.encode()
    fact = read_fact(parse_envelope(body), body)
    receipt = intake.take(ReplayDelivery("evt_example_shipped", fact))  # type: ignore[arg-type]
    assert receipt.outcome is Outcome.ACCEPTED
    assert prescriptions.state("drx_rx_7Q2M9K").status == "shipped"
    assert prescriptions.delivery("evt_example_shipped").status == "processed"
    with pytest.raises(DeliveryNotParkedError):
        intake.take(ReplayDelivery("evt_example_shipped", fact))  # type: ignore[arg-type]


def test_a_replay_that_parks_again_for_the_same_reason_records_nothing(
    prescriptions, intake, monkeypatch
):
    poison("evt_example_shipped", monkeypatch)
    assert deliver(prescriptions, load_example("shipped")) is Outcome.PARKED
    parked = prescriptions.delivery("evt_example_shipped")
    body = parked.body.encode()
    fact = read_fact(parse_envelope(body), body)
    head = prescriptions.recorder.max_notification_id()
    for _ in range(100):  # the bug is still there: every replay parks for the same reason
        receipt = intake.take(ReplayDelivery("evt_example_shipped", fact))  # type: ignore[arg-type]
        assert (receipt.outcome, receipt.reason) == (Outcome.PARKED, parked.reason)
    assert prescriptions.recorder.max_notification_id() == head
    # Another reason is news: recorded once.
    receipt = intake.take(ReplayDelivery("evt_example_shipped", None, "unknown type"))
    assert receipt.reason == "unknown type"
    assert prescriptions.recorder.max_notification_id() == head + 1
    assert prescriptions.delivery("evt_example_shipped").reason == "unknown type"


def test_a_correction_that_parks_for_the_same_reason_is_stored(prescriptions):
    """The replay's idempotence is no shortcut for a new body: a parked delivery corrected by
    DRx is stored with its new body, even when it parks for the same reason again."""
    first = {**load_example("shipped"), "type": "drx.prescription.teleported"}
    assert deliver(prescriptions, first) is Outcome.PARKED
    reason = prescriptions.delivery("evt_example_shipped").reason
    corrected = {**first, "data": {**first["data"], "carrier": "UPS"}}
    assert deliver(prescriptions, corrected) is Outcome.PARKED
    stored = prescriptions.delivery("evt_example_shipped")
    assert stored.reason == reason
    assert '"UPS"' in stored.body


def test_concurrent_deliveries_for_one_prescription_all_land(prescriptions):
    lifecycle = load_lifecycle(LIFECYCLES[-1])
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda e: deliver(prescriptions, e), lifecycle["events"]))
    assert outcomes == [Outcome.ACCEPTED] * len(lifecycle["events"])
    expected = lifecycle["expected_final_state"]
    assert state_subset(prescriptions.state(lifecycle["subject"]).as_dict(), expected) == expected


def test_a_batch_commits_together_answering_repeats_as_duplicates(prescriptions, intake):
    lifecycle = load_lifecycle(LIFECYCLES[0])
    first, *rest = [command_for(e) for e in lifecycle["events"]]
    assert intake.take(first).outcome is Outcome.ACCEPTED
    batch = [first, *rest, rest[0]]  # one already stored, one repeated within the batch
    receipts = intake.take_batch(batch)
    assert [r.outcome for r in receipts] == (
        [Outcome.DUPLICATE] + [Outcome.ACCEPTED] * len(rest) + [Outcome.DUPLICATE]
    )
    expected = lifecycle["expected_final_state"]
    assert state_subset(prescriptions.state(lifecycle["subject"]).as_dict(), expected) == expected


def test_a_batch_with_a_poisonous_fact_parks_it_alone_and_records_the_rest(
    prescriptions, intake, monkeypatch
):
    poison("evt_example_shipped", monkeypatch)
    batch = [command_for(load_example(name)) for name in ("received", "shipped", "sent")]
    one_at_a_time = []
    monkeypatch.setattr(Intake, "take", lambda self, command: one_at_a_time.append(command))
    receipts = intake.take_batch(batch)
    assert one_at_a_time == []  # parked within the batch, not by taking it apart
    assert [r.outcome for r in receipts] == [Outcome.ACCEPTED, Outcome.PARKED, Outcome.ACCEPTED]
    assert prescriptions.state("drx_rx_7Q2M9K").version == 2


def _racing_existing(intake, monkeypatch, misses):
    """Another writer stores `evt_example_sent` just after the batch looked, `misses` times."""
    real = intake.lookup.select_aggregates
    looks = []

    def racing(ids):
        looks.append(1)
        found = real(ids)
        if len(looks) <= misses:
            found = [e for e in found if e.originator_id != delivery_id("evt_example_sent")]
        return found

    monkeypatch.setattr(
        intake, "lookup", type("Racing", (), {"select_aggregates": staticmethod(racing)})
    )
    return looks


def test_a_batch_that_loses_a_race_is_tried_again_whole(prescriptions, intake, monkeypatch):
    sent = command_for(load_example("sent"))
    assert intake.take(sent).outcome is Outcome.ACCEPTED
    looks = _racing_existing(intake, monkeypatch, misses=1)
    one_at_a_time = []
    monkeypatch.setattr(Intake, "take", lambda self, command: one_at_a_time.append(command))
    received = command_for(load_example("received"))
    receipts = intake.take_batch([received, sent])
    assert [r.outcome for r in receipts] == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    assert len(looks) == 2
    assert one_at_a_time == []
    assert prescriptions.state("drx_rx_7Q2M9K").version == 2


def test_a_batch_that_keeps_losing_goes_one_at_a_time(prescriptions, intake, monkeypatch):
    sent = command_for(load_example("sent"))
    assert intake.take(sent).outcome is Outcome.ACCEPTED
    looks = _racing_existing(intake, monkeypatch, misses=99)
    received = command_for(load_example("received"))
    receipts = intake.take_batch([received, sent])
    assert [r.outcome for r in receipts] == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    assert len(looks) == MAX_BATCH_ATTEMPTS
    assert prescriptions.state("drx_rx_7Q2M9K").version == 2


def test_both_stores_load_a_batchs_aggregates_in_one_query(prescriptions, intake, monkeypatch):
    import uuid

    from domain.ids import prescription_id

    deliver(prescriptions, load_example("received"))
    deliver(prescriptions, load_example("sent"))
    subject = "drx_rx_7Q2M9K"
    expected = prescriptions.state(subject).as_dict()

    def one_at_a_time(*_args, **_kwargs):
        raise AssertionError("a batch lookup went one aggregate at a time")

    monkeypatch.setattr(prescriptions.recorder, "select_events", one_at_a_time)
    monkeypatch.setattr(prescriptions.repository, "get", one_at_a_time)
    ids = [prescription_id(subject), delivery_id("evt_example_sent"), uuid.uuid4()]
    loaded = intake._load([command_for(load_example("sent")), command_for(load_example("shipped"))])
    assert set(loaded) == set(ids[:2])
    assert loaded[ids[0]].state().as_dict() == expected
    assert loaded[ids[1]].status == "processed"
    # And the batch is answered from that one query.
    receipts = intake.take_batch([command_for(load_example("sent"))])
    assert [r.outcome for r in receipts] == [Outcome.DUPLICATE]


def test_the_recorder_stores_any_bytes_and_topic_as_given_and_in_order(prescriptions):
    """The PostgreSQL recorder writes its rows as array literals of its own: every byte value,
    and a topic with quotes, backslashes, commas and braces, come back exactly, in order."""
    import uuid

    from eventsourcing.persistence import StoredEvent

    originator = uuid.uuid4()
    odd_topic = 'mod.ule:Cls"with\\odd,{chars} '
    events = [
        StoredEvent(originator, 1, odd_topic, bytes(range(256))),
        StoredEvent(originator, 2, "plain:Topic", b""),
        StoredEvent(originator, 3, odd_topic, b'\\x00"{},NULL'),
    ]
    ids = prescriptions.recorder.insert_events(events)
    stored = prescriptions.recorder.select_events(originator)
    assert [(e.originator_version, e.topic, e.state) for e in stored] == [
        (e.originator_version, e.topic, e.state) for e in events
    ]
    if ids is not None:  # the notification ids follow the order the rows were given in
        assert list(ids) == sorted(ids)
        notified = prescriptions.recorder.select_notifications(min(ids), limit=3)
        assert [n.originator_version for n in notified] == [1, 2, 3]


@pytest.mark.postgres
def test_stored_rows_never_appear_in_a_statement_postgres_would_log(postgres_url):
    """PostgreSQL logs the text of a failed statement (a save that loses a race on a version is
    routine), never its bind parameters by default: the rows, with patient data and DRx's
    signatures, must travel as parameters. pg_stat_activity shows each session's last statement
    text, as the server received it."""
    import uuid

    import psycopg
    from eventsourcing.persistence import IntegrityError, StoredEvent

    from tests.conftest import migrated_postgres

    secret_topic, secret_state = "patient:Jane_Q_Marker", b'{"patient": "Jane Q. Marker"}'
    with migrated_postgres(postgres_url) as settings:
        app = open_prescriptions(settings)
        try:
            event = StoredEvent(uuid.uuid4(), 1, secret_topic, secret_state)
            app.recorder.insert_events([event])
            with pytest.raises(IntegrityError):
                app.recorder.insert_events([event])  # a lost race: the same version again
            with psycopg.connect(settings.database_url) as conn:
                texts = [
                    str(text)
                    for (text,) in conn.execute(
                        "SELECT query FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ]
        finally:
            app.close()
    for text in texts:
        assert "Marker" not in text
        assert secret_state.hex() not in text
    assert any("drx_save" in text for text in texts), texts  # the save's own session


@pytest.mark.postgres
def test_a_batch_lookup_never_starts_parallel_workers(postgres_url):
    """Lookups in the events table are by key: with stale statistics the planner could gather
    them through parallel workers, a process started per query (migration 0004). Here the
    session invites parallel plans outright, and auto_explain sends each plan back as a notice:
    the batch's query run directly is gathered (its two branches in parallel), neither
    `drx_select_heads` (a batch's snapshots and the events after them) nor the library's
    lookup of one aggregate's events is."""
    import uuid

    import psycopg

    from tests.conftest import migrated_postgres

    with (
        migrated_postgres(postgres_url) as settings,
        psycopg.connect(settings.database_url) as conn,
    ):
        conn.autocommit = True
        schema = settings.postgres_schema
        conn.execute(
            f'INSERT INTO "{schema}".drx_events (originator_id, originator_version, topic, state)'
            " SELECT gen_random_uuid(), 1, 't', '\\x00' FROM generate_series(1, 2000)"
        )
        plans: list[str] = []
        conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "parallel_setup_cost = 0",
            "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0",
            "min_parallel_index_scan_size = 0",
            "max_parallel_workers_per_gather = 2",
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
        ):
            conn.execute(f"SET {setting}")
        ids = [uuid.uuid4(), uuid.uuid4()]
        table = f'"{schema}".drx_events'

        def explained(statement: str, params: tuple[object, ...]) -> str:
            plans.clear()
            conn.execute(statement, params)
            return "\n".join(plans)

        direct = explained(
            f"SELECT originator_id, originator_version FROM {table} WHERE originator_id = ANY(%s)"
            f" UNION ALL SELECT DISTINCT originator_id, NULL::bigint FROM {table}"
            " WHERE originator_id = ANY(%s) ORDER BY 1, 2",
            (ids, ids),
        )
        batch = explained(f'SELECT * FROM "{schema}".drx_select_heads(%s)', (ids,))
        # As when a stale estimate makes the index look worse than reading the table.
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        one = explained(
            f"SELECT * FROM {table} WHERE originator_id = %s ORDER BY originator_version",
            (ids[0],),
        )
    assert "Gather" in direct, direct  # the session does invite parallel plans
    assert "drx_events" in batch, batch  # the function's own statement was explained
    assert "drx_snapshots" in batch, batch
    assert "Gather" not in batch, batch
    assert "drx_events" in one, one
    assert "Gather" not in one, one


def _resend(app, payload):
    """As the webhook does: a readable delivery through the batch path, else parked."""
    command = command_for(payload)
    if isinstance(command, RecordDelivery):
        return intake_for(app).take_batch([command])[0]
    return intake_for(app).take(command)


def test_a_retry_whose_attempt_fields_differ_is_a_plain_duplicate(prescriptions):
    payload = load_example("shipped")
    assert deliver(prescriptions, payload) is Outcome.ACCEPTED
    retry = {**payload, "attempt": 3, "sent_at": "2025-03-07T00:00:00Z"}
    assert _resend(prescriptions, retry).outcome is Outcome.DUPLICATE
    assert prescriptions.delivery(payload["id"]).conflicts == []


def test_a_repeated_id_with_another_body_is_kept_as_a_conflict_and_the_fact_is_unchanged(
    prescriptions,
):
    payload = load_example("shipped")
    assert deliver(prescriptions, payload) is Outcome.ACCEPTED
    other = {**payload, "data": {**payload["data"], "tracking_number": "OTHER"}}
    assert _resend(prescriptions, other).outcome is Outcome.CONFLICT
    assert report_digest(json.dumps(other)) != report_digest(json.dumps(payload))
    # A retry (other attempt fields, keys in another order) reports the same.
    retry = {**payload, "attempt": 5, "sent_at": "2025-03-09T00:00:00Z"}
    assert report_digest(json.dumps(dict(reversed(list(retry.items()))))) == report_digest(
        json.dumps(payload)
    )
    # The same other body again is a retry of it: kept once.
    assert _resend(prescriptions, other).outcome is Outcome.DUPLICATE
    delivery = prescriptions.delivery(payload["id"])
    assert [json.loads(c.body)["data"]["tracking_number"] for c in delivery.conflicts] == ["OTHER"]
    assert (delivery.status, delivery.shown_status) == ("processed", "conflict")
    assert json.loads(delivery.body) == payload
    (fact,) = [r.fact for r in prescriptions.history(payload["subject"])]
    assert fact.data.tracking_number == payload["data"]["tracking_number"]  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["batch", "one_at_a_time"])
def test_a_parked_deliverys_corrected_resend_is_processed_once_as_that_event(prescriptions, path):
    payload = load_example("shipped")
    broken = {**payload, "data": {**payload["data"], "fill_number": "one"}}
    assert deliver(prescriptions, broken) is Outcome.PARKED
    corrected = command_for(payload)
    if path == "batch":
        receipt = intake_for(prescriptions).take_batch([corrected])[0]  # type: ignore[list-item]
    else:
        receipt = intake_for(prescriptions).take(corrected)
    assert receipt.outcome is Outcome.ACCEPTED
    delivery = prescriptions.delivery(payload["id"])
    assert (delivery.status, delivery.reason, delivery.conflicts) == ("processed", None, [])
    assert json.loads(delivery.body) == payload
    assert prescriptions.state(payload["subject"]).version == 1
    # Neither the correction again, nor a late retry of the broken body, does anything more.
    assert _resend(prescriptions, payload).outcome is Outcome.DUPLICATE
    assert _resend(prescriptions, broken).outcome is Outcome.DUPLICATE
    assert prescriptions.state(payload["subject"]).version == 1


def test_a_correction_that_still_cannot_be_read_is_parked_with_its_own_body_and_reason(
    prescriptions,
):
    payload = load_example("shipped")
    assert deliver(prescriptions, {**payload, "type": "drx.prescription.nope"}) is Outcome.PARKED
    still_broken = {**payload, "data": {**payload["data"], "carrier": 7}}
    receipt = _resend(prescriptions, still_broken)
    assert receipt.outcome is Outcome.PARKED
    delivery = prescriptions.delivery(payload["id"])
    assert json.loads(delivery.body) == still_broken
    assert "data.carrier" in delivery.reason
    assert delivery.drx_type == "drx.prescription.shipped"


def test_a_late_fact_while_the_store_fails_is_answered_unavailable_not_parked(
    prescriptions, monkeypatch
):
    """A fact that orders before what the prescription's snapshot folded reads the stored
    facts; the store failing then is the store's fault, a 503 that DRx retries, not a fault of
    ours that parks the delivery (its retry would then be a duplicate, the fact left out)."""
    from eventsourcing.persistence import OperationalError

    from domain.handlers import Outcome
    from tests.helpers import FIXTURES, command_for, intake_for

    events = load_lifecycle(FIXTURES / "lifecycles" / "pickup-refills-renewal.json")["events"]
    late = events[1]
    for event in [events[0], *events[2:]]:
        deliver(prescriptions, event)

    def store_away(*_args, **_kwargs):
        raise OperationalError("the store went away")

    with monkeypatch.context() as patch:
        patch.setattr(prescriptions, "recorded_facts", store_away)
        with pytest.raises(OperationalError):
            intake_for(prescriptions).take(command_for(late))
    assert intake_for(prescriptions).take(command_for(late)).outcome is Outcome.ACCEPTED
