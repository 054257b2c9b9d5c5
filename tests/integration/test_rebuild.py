"""Rebuilds on real stores, their bulk phase folded in memory (in this process, and on
PostgreSQL in worker processes): the rebuilt tables equal the live ones row for row, every
column, whatever order the facts came in, with repeated and conflicting deliveries, without
what the live projection set aside; the events after the bulk phase go through the final
transaction; a worker's failure is raised and leaves the live tables as they were."""

from __future__ import annotations

import base64
import dataclasses
import os
import random
from collections.abc import Iterator

import pytest

from domain.prescription import Prescription
from infrastructure import dead_letters
from infrastructure.projector import projector_for
from infrastructure.read_tables import TABLES, TRACKING_TABLE
from infrastructure.rebuild import MEMORY, Rebuilder, RebuildError
from interfaces.bootstrap import Parts, bootstrap
from tests.conftest import migrated_postgres
from tests.helpers import LIFECYCLES, deliver, load_lifecycle, relabelled
from tests.integration.test_dead_letters import bug_in_the_state_code_for

NAMES = ("prescriptions", "deliveries")


def arrivals(seed: int, copies: int = 3) -> list[dict]:
    """Every lifecycle `copies` times, shuffled (facts come late), a share of them twice, one
    a second time with another body (a conflict), and one that cannot be applied (parked)."""
    rng = random.Random(seed)
    events = [
        e
        for path in LIFECYCLES
        for n in range(copies)
        for e in relabelled(load_lifecycle(path), f"r{n}")
    ]
    arrival = events + rng.sample(events, k=20)
    conflicting = events[5]
    arrival.append({**conflicting, "data": {**conflicting.get("data", {}), "note": "another"}})
    arrival.append(
        {**events[0], "id": "evt_unknown_rebuild", "type": "drx.prescription.teleported"}
    )
    rng.shuffle(arrival)
    return arrival


def table_rows(parts: Parts, name: str) -> dict[str, list[tuple]]:
    """Every column of every row of the projection's tables, in key order."""
    return {
        table.name: parts.read_db.query(f"SELECT * FROM {table.name} ORDER BY {table.identity}")
        for table in TABLES[name]
    }


def assert_rebuilt_equal(parts: Parts, rebuilder: Rebuilder, name: str) -> None:
    live = table_rows(parts, name)
    assert all(live.values()), f"{name}: the live tables are empty"
    indexes = indexes_of(parts, name)
    verified = rebuilder.rebuild(name, verify=True)
    assert verified.differences == []
    assert not verified.swapped
    swapped = rebuilder.rebuild(name, verify=False)
    assert swapped.swapped
    assert swapped.rows == len(next(iter(live.values())))
    assert table_rows(parts, name) == live
    assert indexes_of(parts, name) == indexes  # the migrations' names: a later one finds them
    assert {t.name for t in TABLES[name]} <= tables_of(parts)
    assert not {f"{t.name}_rebuild" for t in TABLES[name]} & tables_of(parts)


def indexes_of(parts: Parts, name: str) -> dict[str, set[tuple[str, str]]]:
    """Each of the projection's tables' indexes: its name and its definition."""
    if parts.read_db.dialect == "postgresql":
        sql = (
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = %s"
        )
    else:
        sql = "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index' AND tbl_name = %s"
    found = {t.name: set(parts.read_db.query(sql, (t.name,))) for t in TABLES[name]}
    assert all(found.values()), f"{name}: no index found"
    return found


def tables_of(parts: Parts) -> set[str]:
    if parts.read_db.dialect == "postgresql":
        found = parts.read_db.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    else:
        found = parts.read_db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in found}


def delivered(parts: Parts, seed: int) -> None:
    for event in arrivals(seed):
        deliver(parts.prescriptions, event)
    runner = projector_for(parts.prescriptions, parts.read_db, parts.settings, batch_size=7)
    try:
        runner.catch_up()
    finally:
        runner.stop()


@pytest.mark.parametrize("memory", [MEMORY, 3])
def test_a_rebuild_folded_in_this_process_equals_the_live_tables(parts, settings, memory):
    """`memory` 3: the fold writes entries long before their aggregates' last events, reads
    them back when those come, and writes them again."""
    delivered(parts, seed=11)
    rebuilder = Rebuilder(parts.prescriptions, parts.read_db, settings, workers=1, memory=memory)
    for name in NAMES:
        assert_rebuilt_equal(parts, rebuilder, name)


def test_the_change_feed_is_still_rebuilt_in_batches_and_equals_the_live_one(parts, settings):
    delivered(parts, seed=12)
    assert_rebuilt_equal(parts, Rebuilder(parts.prescriptions, parts.read_db, settings), "changes")


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(params=["clear", "encrypted"])
def pg_parts(request, postgres_url) -> Iterator[Parts]:
    """The service's parts on a new PostgreSQL schema; its events encrypted, or not."""
    with migrated_postgres(postgres_url) as migrated:
        chosen = migrated
        if request.param == "encrypted":
            chosen = dataclasses.replace(migrated, encryption_key=new_key())
        with bootstrap(chosen) as built:
            yield built


def in_workers(parts: Parts, **options) -> Rebuilder:
    """A rebuilder whose bulk phase runs in two worker processes, however few the events."""
    return Rebuilder(parts.prescriptions, parts.read_db, parts.settings, parallel_from=0, **options)


@pytest.mark.postgres
@pytest.mark.parametrize("memory", [MEMORY, 3])
def test_a_rebuild_in_worker_processes_equals_the_live_tables(pg_parts, memory):
    delivered(pg_parts, seed=13)
    rebuilder = in_workers(pg_parts, memory=memory)
    for name in NAMES:
        assert_rebuilt_equal(pg_parts, rebuilder, name)


@pytest.mark.postgres
def test_the_events_after_the_bulk_phase_go_through_the_final_transaction(pg_parts):
    events = arrivals(seed=14)
    third = len(events) // 3
    first, later = events[:third], {"prescriptions": events[third : 2 * third]}
    later["deliveries"] = events[2 * third :]
    for event in first:
        deliver(pg_parts.prescriptions, event)
    runner = projector_for(pg_parts.prescriptions, pg_parts.read_db, pg_parts.settings)
    try:
        runner.catch_up()
        for name in NAMES:
            bulk_done: list[int] = []

            def meanwhile(position: int, stop: int, name: str = name, done=bulk_done) -> None:
                """Once the workers are done: more deliveries, late facts among them,
                projected by the live runner before the final transaction begins."""
                if position == stop and not done:
                    done.append(stop)
                    for event in later[name]:
                        deliver(pg_parts.prescriptions, event)
                    runner.catch_up()

            result = in_workers(pg_parts).rebuild(name, verify=True, progress=meanwhile)
            assert bulk_done
            assert result.position > bulk_done[0]
            assert result.differences == []
    finally:
        runner.stop()
    for name in NAMES:
        assert_rebuilt_equal(pg_parts, in_workers(pg_parts), name)


@pytest.mark.postgres
def test_a_rebuild_in_worker_processes_leaves_out_what_the_live_projection_set_aside(
    pg_parts, monkeypatch
):
    """The bug is in this process only: a worker that did not leave the events out would fold
    them without failing, and the rebuilt row would differ from the live one."""
    victim = relabelled(load_lifecycle(LIFECYCLES[0]), "victim")
    bug_in_the_state_code_for(victim[1]["id"], monkeypatch)
    for event in arrivals(seed=15) + victim:
        deliver(pg_parts.prescriptions, event)
    runner = projector_for(pg_parts.prescriptions, pg_parts.read_db, pg_parts.settings)
    try:
        runner.catch_up()
    finally:
        runner.stop()
    letters = dead_letters.dead_letters(pg_parts.read_db, "prescriptions")
    assert len(letters) == len(victim) - 1  # the failing fact and those held behind it
    result = in_workers(pg_parts).rebuild("prescriptions", verify=True)
    assert result.differences == []
    stored = pg_parts.prescriptions.recorder.select_notifications(
        start=1, limit=10_000, topics=pg_parts.projector.models[0].topics
    )
    assert result.events == len(stored) - len(letters)


@pytest.mark.postgres
def test_a_workers_failure_is_raised_and_the_live_tables_stay(pg_parts):
    """A stored subject PostgreSQL's text cannot hold (U+0000), which the live projection has
    not reached to set aside: the rebuild stops, names it, and drops its fresh table."""
    for event in arrivals(seed=16, copies=1):
        deliver(pg_parts.prescriptions, event)
    pg_parts.projector.catch_up()
    live = table_rows(pg_parts, "prescriptions")
    pg_parts.prescriptions.save(Prescription("drx_rx_\x00nul"))
    head = pg_parts.prescriptions.recorder.max_notification_id()
    with pg_parts.read_db.transaction() as cursor:  # as if the live projection were past it
        cursor.execute(
            f"UPDATE {TRACKING_TABLE} SET position = %s WHERE name = %s", (head, "prescriptions")
        )
    with pytest.raises(RebuildError, match="cannot be projected"):
        in_workers(pg_parts).rebuild("prescriptions", verify=False)
    assert table_rows(pg_parts, "prescriptions") == live
    assert "rx_prescriptions_rebuild" not in tables_of(pg_parts)


@pytest.mark.parametrize("name", ["prescriptions", "changes"])
def test_dead_letters_retried_while_the_bulk_phase_left_them_out_are_in_the_swapped_table(
    parts, monkeypatch, name
):
    """The bulk phase leaves out what the live projection set aside; a retry that applies them
    live meanwhile must not be lost when the fresh table takes the live one's place."""
    victim = relabelled(load_lifecycle(LIFECYCLES[0]), "retried")
    fix = bug_in_the_state_code_for(victim[1]["id"], monkeypatch)
    for event in arrivals(seed=21, copies=1) + victim:
        deliver(parts.prescriptions, event)
    runner = projector_for(parts.prescriptions, parts.read_db, parts.settings)
    live_after_retry = {}
    try:
        runner.catch_up()
        assert dead_letters.dead_letters(parts.read_db, name)
        before_retry = table_rows(parts, name)
        bulk = Rebuilder._bulk

        def bulk_then_retry(self, *args, **kwargs):
            done = bulk(self, *args, **kwargs)
            fix()
            [retried] = runner.retry_dead_letters(name)
            assert (retried.applied, retried.still_dead) == (len(victim) - 1, 0)
            live_after_retry.update(table_rows(parts, name))
            return done

        monkeypatch.setattr(Rebuilder, "_bulk", bulk_then_retry)
        result = Rebuilder(parts.prescriptions, parts.read_db).rebuild(name, verify=False)
    finally:
        runner.stop()
    assert result.swapped
    assert live_after_retry != before_retry  # the retry changed the live tables
    assert table_rows(parts, name) == live_after_retry
