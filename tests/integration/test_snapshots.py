"""Prescription snapshots on real stores (`domain/prescription.py`): a long history loaded from
its last snapshot gives what every event gives, with concurrent writers and late facts; the
snapshots commit with their events; deleting them changes nothing but the cost."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from eventsourcing.persistence import IntegrityError

from bench.history_cost import payload
from domain.handlers import Outcome
from domain.ids import prescription_id
from domain.prescription import SNAPSHOT_INTERVAL, Prescription
from domain.state import derive_state
from infrastructure.projector import projector_for
from interfaces.drx.translator import parse_envelope, read_fact
from tests.integration.test_audit import audit, deliver_signed, edit, fetch, findings

SUBJECTS = [f"drx_rx_hist_{i:05d}" for i in range(3)]


def deliver(app, settings, item) -> Outcome:
    """Signed, as the webhook takes it (the audit checks each delivery's signature)."""
    return deliver_signed(app, item, settings.webhook_secrets[0]).outcome


def snapshots_table(settings) -> str:
    return "stored_snapshots" if settings.dialect == "sqlite" else "drx_snapshots"


def snapshot_versions(settings, subject: str) -> list[int]:
    key = prescription_id(subject)
    param = key.hex if settings.dialect == "sqlite" else key
    mark = "?" if settings.dialect == "sqlite" else "%s"
    rows = fetch(
        settings,
        f"SELECT originator_version FROM {snapshots_table(settings)}"
        f" WHERE originator_id = {mark} ORDER BY 1",
        (param,),
    )
    return [r[0] for r in rows]


def test_a_long_history_from_concurrent_writers_with_late_facts_reads_as_every_event_says(
    settings, parts
):
    app = parts.prescriptions
    rng = random.Random(7)
    # 60 facts each, sent by 4 writers at once (lost races reload from the snapshot), with
    # every tenth fact held back and sent at the end: late, some before the last snapshot.
    sends = [payload(i, n) for n in range(1, 61) for i in range(len(SUBJECTS))]
    held = [s for k, s in enumerate(sends) if k % 10 == 5]
    first = [s for s in sends if s not in held]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda p: deliver(app, settings, p), first))
    rng.shuffle(held)
    outcomes += [deliver(app, settings, p) for p in held]
    assert outcomes == [Outcome.ACCEPTED] * len(sends)

    for subject in SUBJECTS:
        versions = snapshot_versions(settings, subject)
        assert len(versions) == 1  # the older ones deleted as each new one was written
        assert versions[0] >= 60 // SNAPSHOT_INTERVAL * SNAPSHOT_INTERVAL
        facts = [r.fact for r in app.history(subject)]
        assert len(facts) == 60
        loaded = app.prescription(subject)
        assert loaded.version == 61
        assert loaded.state() == derive_state(subject, facts)
        assert loaded.last_hash == app.history(subject)[-1].hash
    assert findings(audit(app, settings)) == []  # the chain, computed from the snapshots, holds

    # The read model, projected from the events, says the same.
    runner = projector_for(app, parts.read_db, settings)
    runner.catch_up()
    for subject in SUBJECTS:
        (row,) = fetch(
            settings, "SELECT state FROM rx_prescriptions WHERE prescription_id = %s", (subject,)
        )
        assert json.loads(row[0]) == app.state(subject).as_dict()


def test_snapshots_are_a_cache_deleting_them_changes_nothing_but_the_cost(settings, parts):
    app = parts.prescriptions
    subject = SUBJECTS[0]
    for n in range(1, 3 * SNAPSHOT_INTERVAL):
        assert deliver(app, settings, payload(0, n)) is Outcome.ACCEPTED
    before = app.state(subject)
    assert snapshot_versions(settings, subject)
    edit(settings, f"DELETE FROM {snapshots_table(settings)}")
    assert snapshot_versions(settings, subject) == []
    assert app.state(subject) == before
    # A new fact, and one that orders before all of them, on the store without snapshots.
    late = payload(0, 2, hours=0.5)
    for item in (payload(0, 3 * SNAPSHOT_INTERVAL), late):
        assert deliver(app, settings, item) is Outcome.ACCEPTED
    facts = [r.fact for r in app.history(subject)]
    assert app.state(subject) == derive_state(subject, facts)
    assert snapshot_versions(settings, subject)  # taken again
    assert findings(audit(app, settings)) == []


def test_each_prescription_keeps_its_last_snapshot_only(settings, parts):
    app = parts.prescriptions
    subject = SUBJECTS[2]
    for n in range(1, 3 * SNAPSHOT_INTERVAL + 2):
        assert deliver(app, settings, payload(2, n)) is Outcome.ACCEPTED
        versions = snapshot_versions(settings, subject)
        assert len(versions) <= 1, versions
    assert snapshot_versions(settings, subject) == [3 * SNAPSHOT_INTERVAL]
    # a late fact before every other, after a full read, takes a new one in place of the last
    assert deliver(app, settings, payload(2, 1, hours=0.5)) is Outcome.ACCEPTED
    (latest,) = snapshot_versions(settings, subject)
    assert latest > 3 * SNAPSHOT_INTERVAL
    facts = [r.fact for r in app.history(subject)]
    assert app.state(subject) == derive_state(subject, facts)
    assert snapshot_versions(settings, SUBJECTS[0]) == []  # another prescription's untouched


def test_a_save_that_loses_a_race_writes_no_snapshot(settings, parts):
    """The snapshot commits with the events it folds: a save refused (a lost race) leaves
    neither. The loser's save would take a snapshot (a late fact, before what the last one
    folded) at a version the winner took without one."""
    app = parts.prescriptions
    subject = SUBJECTS[1]
    for n in range(2, SNAPSHOT_INTERVAL + 3):
        deliver(app, settings, payload(1, n))
    assert snapshot_versions(settings, subject) == [SNAPSHOT_INTERVAL]
    stale = app.prescription(subject)
    assert deliver(app, settings, payload(1, 50)) is Outcome.ACCEPTED  # in order: no snapshot
    body = json.dumps(payload(1, 2, hours=0.5)).encode()  # before every fact
    stale.record(read_fact(parse_envelope(body), body))
    assert stale.snapshot_due
    with pytest.raises(IntegrityError):
        app.save(stale)
    assert snapshot_versions(settings, subject) == [SNAPSHOT_INTERVAL]
    history = app.history(subject)
    assert [r.fact.event_id for r in history][-1] == payload(1, 50)["id"]
    loaded = app.prescription(subject)
    assert loaded.last_hash == history[-1].hash
    assert loaded.state() == derive_state(subject, [r.fact for r in history])


@pytest.mark.postgres
def test_a_follower_of_concurrent_saves_passes_over_no_event(postgres_url):
    """Saves commit in the order of their notification ids (they wait for each other), so a
    follower that reads on from the last id it saw, while four writers save at once, misses
    none: were two saves to interleave, the later id could commit first and be read, and the
    earlier one, committed a moment after, passed over for good."""
    import threading

    from infrastructure.eventstore import open_prescriptions
    from infrastructure.migrations import migrate
    from tests.conftest import drop_schema, postgres_settings

    settings = postgres_settings(postgres_url)
    migrate(settings)
    writers = [open_prescriptions(settings) for _ in range(4)]
    follower = open_prescriptions(settings)
    done = threading.Event()
    seen: list[int] = []

    def write(app, n):
        for i in range(150):
            app.save(Prescription(f"drx_rx_follow_{n}_{i}"))

    def follow():
        last = 0
        while True:
            finished = done.is_set()
            page = follower.recorder.select_notifications(last + 1, 500)
            seen.extend(item.id for item in page)
            last = page[-1].id if page else last
            if finished and not page:
                return

    try:
        tail = threading.Thread(target=follow)
        tail.start()
        threads = [threading.Thread(target=write, args=(app, n)) for n, app in enumerate(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        tail.join(30)
        stored = [item.id for item in follower.recorder.select_notifications(1, 10_000)]
        assert len(stored) == 600
        assert seen == stored
    finally:
        for app in (*writers, follower):
            app.close()
        drop_schema(settings)
