"""An event a projection cannot apply is set aside as a dead letter with its reason, and the
projection goes on; the aggregate's later events wait behind it; a retry after the fix applies
them in their order."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

import infrastructure.read_models
from domain.prescription import Prescription
from infrastructure import dead_letters
from infrastructure.projector import projector_for, read_position
from infrastructure.queries import PrescriptionFilter, ReadQueries
from infrastructure.read_models import DeliveriesModel
from infrastructure.rebuild import Rebuilder
from tests.helpers import LIFECYCLES, deliver, load_lifecycle, relabelled
from tests.integration.test_projections import assert_read_model_equals_store


def lifecycle(tag: str) -> list[dict]:
    return relabelled(load_lifecycle(LIFECYCLES[0]), tag)


def bug_in_the_state_code_for(event_id: str, monkeypatch):
    """A bug of ours that only this fact sets off, in the projection's state code (whether it
    extends a stored state or derives one again); undone by the returned function (the fix)."""
    models = infrastructure.read_models
    real_derive, real_extend = models.derive_state, models.extend_state

    def buggy_derive(subject, facts):
        facts = list(facts)
        if any(f.event_id == event_id for f in facts):
            raise KeyError("a bug that only this fact sets off")
        return real_derive(subject, facts)

    def buggy_extend(state, fact):
        if fact.event_id == event_id:
            raise KeyError("a bug that only this fact sets off")
        return real_extend(state, fact)

    monkeypatch.setattr(models, "derive_state", buggy_derive)
    monkeypatch.setattr(models, "extend_state", buggy_extend)

    def fix():
        monkeypatch.setattr(models, "derive_state", real_derive)
        monkeypatch.setattr(models, "extend_state", real_extend)

    return fix


@pytest.fixture
def runner(prescriptions, read_db, settings):
    runner = projector_for(prescriptions, read_db, settings, batch_size=1000)
    yield runner
    runner.stop()


def test_a_fact_the_projection_fails_on_is_set_aside_and_the_others_go_on(
    prescriptions,
    read_db,
    runner,
    monkeypatch,
):
    before, victim, after = lifecycle("before"), lifecycle("victim"), lifecycle("after")
    fix = bug_in_the_state_code_for(victim[2]["id"], monkeypatch)
    for event in before + victim + after:
        deliver(prescriptions, event)
    runner.catch_up()

    listed = {
        item.split('"prescription_id":"', 1)[1].split('"', 1)[0]
        for item in ReadQueries(read_db).prescriptions_json(PrescriptionFilter(), 50, None).items
    }
    assert {before[0]["subject"], after[0]["subject"]} <= listed
    letters = dead_letters.dead_letters(read_db, "prescriptions")
    failed = [letter for letter in letters if not letter.held]
    assert len(failed) == 1
    assert "KeyError at test_dead_letters.py" in failed[0].reason
    # The victim's facts after the failing one wait behind it; none of another prescription.
    assert {letter.originator_id for letter in letters} == {failed[0].originator_id}
    assert len(letters) == len(victim) - 2
    # The change feed folds the same state: it sets the same facts aside.
    dead = {s.name: s.dead_letters for s in runner.status()}
    assert dead == {"prescriptions": len(letters), "deliveries": 0, "changes": len(letters)}
    head = runner.head()
    assert read_position(read_db, "prescriptions") == head  # not stuck behind it

    fix()
    (result, other, changes) = runner.retry_dead_letters()
    assert (result.name, result.applied, result.still_dead) == ("prescriptions", len(letters), 0)
    assert (other.applied, other.still_dead) == (0, 0)
    assert (changes.name, changes.applied, changes.still_dead) == ("changes", len(letters), 0)
    assert dead_letters.dead_letters(read_db) == []
    assert_read_model_equals_store(prescriptions, read_db)


def test_a_retry_that_still_fails_keeps_the_dead_letter_with_one_attempt_more(
    prescriptions,
    read_db,
    runner,
    monkeypatch,
):
    victim = lifecycle("again")
    bug_in_the_state_code_for(victim[1]["id"], monkeypatch)
    for event in victim:
        deliver(prescriptions, event)
    runner.catch_up()
    count = len(dead_letters.dead_letters(read_db, "prescriptions"))
    (result, *_) = runner.retry_dead_letters()
    assert (result.applied, result.still_dead) == (0, count)
    letters = dead_letters.dead_letters(read_db, "prescriptions")
    assert len(letters) == count
    # Tried twice: the one that fails; those waiting behind it were not tried.
    assert [(letter.held, letter.attempts) for letter in letters] == [(False, 2)] + [(True, 1)] * (
        count - 1
    )


def test_a_delivery_set_aside_keeps_its_later_outcome_waiting_behind_it(
    prescriptions,
    read_db,
    runner,
    monkeypatch,
):
    events = lifecycle("order")
    victim = events[1]["id"]
    real = DeliveriesModel.apply

    def buggy(self, cursor, batch):
        if any(getattr(event, "event_id", None) == victim for _, event in batch):
            raise ValueError("a bug that only this delivery sets off")
        real(self, cursor, batch)

    monkeypatch.setattr(DeliveriesModel, "apply", buggy)
    for event in events:
        deliver(prescriptions, event)
    runner.catch_up()
    letters = dead_letters.dead_letters(read_db, "deliveries")
    assert [letter.held for letter in letters] == [False, True]  # Received, then Processed
    monkeypatch.setattr(DeliveriesModel, "apply", real)
    runner.retry_dead_letters("deliveries")
    row = read_db.query("SELECT status, seq FROM rx_deliveries WHERE event_id = %s", (victim,))
    assert row == [("processed", letters[0].position)]


def test_a_store_that_fails_sets_nothing_aside_and_the_batch_is_tried_again(
    prescriptions,
    read_db,
    runner,
    settings,
    monkeypatch,
):
    for event in lifecycle("outage"):
        deliver(prescriptions, event)
    down = (
        psycopg.OperationalError if settings.dialect == "postgresql" else sqlite3.OperationalError
    )
    real = DeliveriesModel.apply

    def unreachable(self, cursor, batch):
        raise down("the server closed the connection")

    monkeypatch.setattr(DeliveriesModel, "apply", unreachable)
    with pytest.raises(down):
        runner.catch_up()
    assert dead_letters.dead_letters(read_db) == []
    assert read_position(read_db, "deliveries") == 0
    monkeypatch.setattr(DeliveriesModel, "apply", real)
    runner.catch_up()
    assert read_position(read_db, "deliveries") == runner.head()


def test_a_rebuild_leaves_out_what_the_live_projection_set_aside_and_verifies_equal(
    prescriptions,
    read_db,
    runner,
    monkeypatch,
):
    victim = lifecycle("rebuilt")
    bug_in_the_state_code_for(victim[0]["id"], monkeypatch)
    for event in lifecycle("fine") + victim:
        deliver(prescriptions, event)
    runner.catch_up()
    assert dead_letters.dead_letters(read_db, "prescriptions")
    result = Rebuilder(prescriptions, read_db).rebuild("prescriptions", verify=True)
    assert result.differences == []


@pytest.fixture
def postgres_store(postgres_url):
    """A migrated PostgreSQL schema of its own: (application, read database, projector)."""
    from infrastructure.database import open_read_database
    from infrastructure.eventstore import open_prescriptions
    from infrastructure.migrations import migrate
    from tests.conftest import drop_schema, postgres_settings

    settings = postgres_settings(postgres_url)
    migrate(settings)
    app, db = open_prescriptions(settings), open_read_database(settings)
    runner = projector_for(app, db, settings)
    try:
        yield app, db, runner
    finally:
        runner.stop()
        db.close()
        app.close()
        drop_schema(settings)


@pytest.mark.postgres
def test_on_postgresql_a_stored_nul_character_is_set_aside_not_a_stuck_projection(
    postgres_store,
):
    """Stored before the webhook refused it (an older version, or straight into the store):
    PostgreSQL's text columns cannot hold U+0000."""
    app, db, runner = postgres_store
    app.save(Prescription("drx_rx_\x00nul"))
    for event in lifecycle("beside"):
        deliver(app, event)
    runner.catch_up()
    (letter,) = dead_letters.dead_letters(db, "prescriptions")
    assert "DataError" in letter.reason
    assert read_position(db, "prescriptions") == runner.head()
    assert ReadQueries(db).prescription_json(lifecycle("beside")[0]["subject"]) is not None


@pytest.mark.postgres
def test_on_postgresql_a_value_too_long_to_index_is_set_aside_not_a_stuck_projection(
    postgres_store,
):
    """A patient id of 4,000 characters that do not compress is more than a btree's row holds
    (2,704 bytes): PostgreSQL's program limit exceeded, an OperationalError to psycopg, once
    taken for a passing fault, so every projection tried the same batch again for ever."""
    import random
    import string

    app, db, runner = postgres_store
    rng = random.Random(7)
    (received, *_) = lifecycle("long")
    received["data"]["patient"]["drx_patient_id"] = "".join(
        rng.choices(string.ascii_letters + string.digits, k=4000)
    )
    deliver(app, received)
    for event in lifecycle("beside"):
        deliver(app, event)
    runner.catch_up()
    letters = dead_letters.dead_letters(db)
    assert letters, "nothing set aside"
    assert {letter.projection for letter in letters} >= {"prescriptions", "changes"}
    assert all("ProgramLimitExceeded" in letter.reason for letter in letters), letters
    for name in ("prescriptions", "deliveries", "changes"):
        assert read_position(db, name) == runner.head()
    assert ReadQueries(db).prescription_json(lifecycle("beside")[0]["subject"]) is not None


def test_program_limit_exceeded_is_poison_and_other_operational_errors_are_not():
    from eventsourcing import persistence

    limit = psycopg.errors.ProgramLimitExceeded("index row size 4024 exceeds btree maximum")
    assert dead_letters.is_poison(limit)
    wrapped = persistence.OperationalError("wrapped")
    wrapped.__cause__ = limit
    assert dead_letters.is_poison(wrapped)
    assert not dead_letters.is_poison(psycopg.OperationalError("server closed the connection"))
    assert not dead_letters.is_poison(psycopg.errors.AdminShutdown("terminating connection"))
