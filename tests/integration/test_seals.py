"""The seals on real stores: edits made behind the service's back (to the events, the access log,
the seals and checkpoints themselves) are found and named, item by item; an untouched store
passes. Each test damages one thing, the way an attacker or a faulty script would."""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from dataclasses import replace

import psycopg
import pytest

from domain.ids import delivery_id, prescription_id
from domain.seals import EVENTS, GENESIS, canonical_record, digest, seal
from infrastructure.access_log import Access, AccessFilter
from infrastructure.seals import CheckpointSigner, Sealer, SealVerifier
from tests.helpers import LIFECYCLES, load_lifecycle
from tests.integration.test_audit import audit, deliver_signed, edit, fetch

LEAST = -(2**63)  # the least position a 64-bit column holds
TRUNCATED = "drx_rx_LC0002"  # the last lifecycle delivered: its events are the store's tail
ACCESS_ROWS = [
    Access("2026-12-01T08:00:00.000000Z", "app-one", "GET", "/prescriptions/x", 200, ("x",), ()),
    Access("2026-12-01T08:00:01.000000Z", "app-two", "GET", "/changes", 200, ("y", "x"), ("p",)),
    Access("2026-12-01T08:00:02.000000Z", "app-one", "GET", "/prescriptions", 200, (), ("p",)),
]


def signing_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def stored(settings, parts):
    """The four lifecycles delivered and three access-log rows written, as the service does."""
    secret = settings.webhook_secrets[0]
    for path in LIFECYCLES:
        for event in load_lifecycle(path)["events"]:
            deliver_signed(parts.prescriptions, event, secret)
    for entry in ACCESS_ROWS:
        parts.access_log.append(entry)
    assert parts.access_log.flush() == len(ACCESS_ROWS)
    return parts


def sealed(stored, settings, key: str = "") -> tuple[Sealer, SealVerifier]:
    """Every item sealed and one checkpoint stored; the verifier (both with `key`)."""
    keyed = replace(settings, audit_signing_key=key)
    sealer = Sealer(stored.read_db, keyed, stored.clock)
    sealer.checkpoint()
    return sealer, SealVerifier(keyed)


def events(settings) -> list[tuple[int, str, int, str]]:
    """(position, originator id, version, topic) of every stored event, in position order."""
    rows = fetch(
        settings,
        f"SELECT {position_column(settings)}, originator_id, originator_version, topic"
        " FROM {events} ORDER BY 1",
    )
    return [(p, str(uuid.UUID(str(o))), v, t) for p, o, v, t in rows]


def named(position: int, originator, version: int) -> str:
    return f"event {position} ({originator} v{version})"


def findings(report) -> list[tuple[str, str]]:
    return [(f.where, f.what.split(":")[0]) for f in report.findings]


def stored_key(settings, originator: str):
    return originator if settings.dialect == "postgresql" else uuid.UUID(originator).hex


def position_column(settings) -> str:
    return "notification_id" if settings.dialect == "postgresql" else "rowid"


def test_an_untouched_store_passes_with_every_item_sealed(stored, settings):
    _, verifier = sealed(stored, settings)
    report = verifier.verify()
    assert report.findings == []
    total = len(events(settings))
    assert (report.sequences["events"].sealed, report.sequences["events"].unsealed) == (total, 0)
    assert report.sequences["access"].sealed == 3
    assert report.checkpoints == 1
    assert [where.split(" (")[0] for where in report.unsigned] == ["stored checkpoint 1"]


def test_events_stored_after_the_last_seal_are_counted_not_yet_sealed(stored, settings):
    _, verifier = sealed(stored, settings)
    before = len(events(settings))
    first = load_lifecycle(LIFECYCLES[0])["events"][0]
    later = {**first, "id": "evt_after_the_seal", "subject": "drx_rx_later"}
    deliver_signed(stored.prescriptions, later, settings.webhook_secrets[0])
    report = verifier.verify()
    assert report.findings == []
    assert report.sequences["events"].unsealed == len(events(settings)) - before > 0


def test_a_changed_event_is_named(stored, settings):
    _, verifier = sealed(stored, settings)
    position, originator, version, _ = next(
        e for e in events(settings) if e[3].endswith("Prescription.Sent")
    )
    ((state,),) = fetch(
        settings,
        f"SELECT state FROM {{events}} WHERE {position_column(settings)} = %s",
        (position,),
    )
    edit(
        settings,
        f"UPDATE {{events}} SET state = %s WHERE {position_column(settings)} = %s",
        (bytes(state) + b" ", position),
    )
    assert findings(verifier.verify()) == [(named(position, originator, version), "changed")]


def test_an_event_deleted_in_the_middle_is_named(stored, settings):
    _, verifier = sealed(stored, settings)
    position, originator, version, _ = events(settings)[40]
    assert (
        edit(
            settings, f"DELETE FROM {{events}} WHERE {position_column(settings)} = %s", (position,)
        )
        == 1
    )
    assert findings(verifier.verify()) == [(named(position, originator, version), "removed")]


def test_two_events_whose_positions_were_swapped_are_both_named(stored, settings):
    _, verifier = sealed(stored, settings)
    first, second = events(settings)[10], events(settings)[20]
    column = position_column(settings)
    for old, new in ((first[0], -7), (second[0], first[0]), (-7, second[0])):
        edit(settings, f"UPDATE {{events}} SET {column} = %s WHERE {column} = %s", (new, old))
    report = verifier.verify()
    assert findings(report) == [
        (named(first[0], second[1], second[2]), "replaced"),
        (named(second[0], first[1], first[2]), "replaced"),
    ]
    assert f"{first[1]} v{first[2]} was sealed at this position" in report.findings[0].what


def test_two_events_whose_contents_were_swapped_are_both_named(stored, settings):
    _, verifier = sealed(stored, settings)
    first, second = events(settings)[10], events(settings)[11]
    column = position_column(settings)
    states = dict(
        fetch(
            settings,
            f"SELECT {column}, state FROM {{events}} WHERE {column} IN (%s, %s)",
            (first[0], second[0]),
        )
    )
    for position, other in ((first[0], second[0]), (second[0], first[0])):
        edit(
            settings,
            f"UPDATE {{events}} SET state = %s WHERE {column} = %s",
            (bytes(states[other]), position),
        )
    assert findings(verifier.verify()) == [
        (named(first[0], first[1], first[2]), "changed"),
        (named(second[0], second[1], second[2]), "changed"),
    ]


@pytest.mark.parametrize("position", [0, LEAST])
def test_an_event_inserted_at_a_past_position_is_named(stored, settings, position):
    _, verifier = sealed(stored, settings)
    column = position_column(settings)
    ((topic, state),) = fetch(settings, f"SELECT topic, state FROM {{events}} WHERE {column} = 5")
    forged = uuid.uuid4()
    edit(
        settings,
        f"INSERT INTO {{events}} (originator_id, originator_version, topic, state, {column})"
        " VALUES (%s, 1, %s, %s, %s)",
        (stored_key(settings, str(forged)), topic, bytes(state), position),
    )
    report = verifier.verify()
    assert findings(report) == [(named(position, forged, 1), "inserted")]
    assert report.sequences["events"].unsealed == 0


def test_an_access_row_inserted_at_the_least_position_is_named(stored, settings):
    _, verifier = sealed(stored, settings)
    edit(
        settings,
        "INSERT INTO drx_access_log (id, at, key_name, method, path, status, prescription_ids,"
        " patient_ids) SELECT %s, at, 'nurse-jane', method, path, status, prescription_ids,"
        " patient_ids FROM drx_access_log WHERE id = 1",
        (LEAST,),
    )
    assert findings(verifier.verify()) == [(f"access-log row {LEAST}", "inserted")]


def test_event_rows_edited_past_reading_are_named_by_both_passes(stored, settings):
    """A row the recorder cannot turn into a notification at all (an id that is no UUID, a
    state that is no bytes) is a finding of the fact-chain pass, which goes on after it, and of
    the seals' pass: never a traceback that names nothing."""
    _, verifier = sealed(stored, settings)
    column = position_column(settings)
    if settings.dialect == "postgresql":
        edits = {5: "state = NULL"}
    else:
        edits = {5: "originator_id = 'garbage'", 9: "state = 1.5", 12: "originator_id = NULL"}
    for position, change in edits.items():
        assert edit(settings, f"UPDATE {{events}} SET {change} WHERE {column} = {position}") == 1
    report = stored.auditor.verify()
    unreadable = [f.where for f in report.findings if "cannot be read" in f.what]
    assert unreadable[0] == "stored event at position 5"
    assert len(unreadable) == len(edits)
    total = fetch(settings, "SELECT count(*) FROM {events}")[0][0]
    assert report.events == total - len(edits) + (9 in edits)  # a REAL state still reads as a row
    damaged = {f.where.split(" (")[0] for f in verifier.verify().findings}
    assert damaged == {f"event {position}" for position in edits}


def test_text_edited_into_bytes_that_are_no_utf8_is_named_on_sqlite(stored, settings):
    _, verifier = sealed(stored, settings)
    if settings.dialect == "postgresql":  # it keeps no text that is not valid in its encoding
        with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
            edit(settings, "UPDATE drx_access_log SET path = convert_from('\\xff', 'UTF8')")
        return
    edit(settings, "UPDATE drx_access_log SET path = CAST(x'ff' AS TEXT) WHERE id = 3")
    edit(settings, "UPDATE {events} SET topic = CAST(x'fe' AS TEXT) WHERE rowid = 4")
    assert {f.where.split(" (")[0] for f in verifier.verify().findings} == {
        "access-log row 3",
        "event 4",
    }


def test_a_passing_fault_of_the_database_is_no_finding(stored, settings, monkeypatch):
    """A page that fails once (a connection reset) and reads when asked again is not a row that
    cannot be read: verify fails as before, rather than naming a healthy event and skipping
    the rest."""
    recorder = stored.prescriptions.recorder
    select = recorder.select_notifications
    calls = []

    def once_failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the connection was reset")
        return select(*args, **kwargs)

    monkeypatch.setattr(recorder, "select_notifications", once_failing)
    with pytest.raises(ConnectionError):
        stored.auditor.verify()


def test_the_fact_chain_pass_stops_after_so_many_unreadable_rows(stored, settings, monkeypatch):
    """A store edited past reading row after row is named up to a bound, then the rest of the
    fact-chain pass is said not to be walked (the seals' pass names every row)."""
    monkeypatch.setattr("domain.audit.UNREADABLE_MAX", 2)
    column = position_column(settings)
    change = (
        "state = NULL" if settings.dialect == "postgresql" else "originator_id = 'bad' || rowid"
    )
    edit(settings, f"UPDATE {{events}} SET {change} WHERE {column} IN (5, 6, 8)")
    wheres = [
        f.where
        for f in stored.auditor.verify().findings
        if "not walked" in f.what or "cannot be read" in f.what
    ]
    assert wheres == [
        "stored event at position 5",
        "stored event at position 6",
        "stored events after position 6",
    ]


def test_access_rows_edited_past_reading_are_named_and_the_log_still_lists(stored, settings):
    _, verifier = sealed(stored, settings)
    if settings.dialect == "postgresql":
        edit(settings, """UPDATE drx_access_log SET prescription_ids = '{"a": 1}' WHERE id = 1""")
        edited = {"a": 1}
    else:
        edit(settings, "UPDATE drx_access_log SET status = x'00ff' WHERE id = 2")
        edit(settings, "UPDATE drx_access_log SET prescription_ids = 'not json' WHERE id = 1")
        edited = "not json"
    assert {f.where for f in verifier.verify().findings} == (
        {"access-log row 1"}
        if settings.dialect == "postgresql"
        else {"access-log row 1", "access-log row 2"}
    )
    items, _ = stored.access.find(AccessFilter(None, None, None, None), 10, None)
    assert [item["prescription_ids"][:1] for item in items] == [
        [f"(not a list of ids: {edited!r})"],
        ["x"],
        [],
    ]
    items, _ = stored.access.find(AccessFilter(prescription_id="x"), 10, None)
    assert [item["path"] for item in items] == ["/changes"]  # row 1 no longer names x


def test_a_deliverys_last_event_cut_off_is_named(stored, settings):
    _, verifier = sealed(stored, settings)
    delivery = str(delivery_id("evt_drx_rx_LC0003_005"))
    position, originator, version, topic = [e for e in events(settings) if e[1] == delivery][-1]
    assert topic.endswith("Delivery.Processed")
    edit(
        settings,
        f"DELETE FROM {{events}} WHERE {position_column(settings)} = %s",
        (position,),
    )
    assert findings(verifier.verify()) == [(named(position, originator, version), "removed")]


def test_a_prescription_removed_with_all_its_deliveries_is_named_event_by_event(stored, settings):
    """The facts' chains and the deliveries' signatures cannot see this: nothing that is left
    refers to what was removed. The seals name every event."""
    _, verifier = sealed(stored, settings)
    subject = "drx_rx_LC0003"
    lifecycle = next(
        load_lifecycle(p) for p in LIFECYCLES if load_lifecycle(p)["subject"] == subject
    )
    gone = {str(prescription_id(subject))} | {
        str(delivery_id(e["id"])) for e in lifecycle["events"]
    }
    removed = [e for e in events(settings) if e[1] in gone]
    for originator in gone:
        edit(
            settings,
            "DELETE FROM {events} WHERE originator_id = %s",
            (stored_key(settings, originator),),
        )
    assert audit(stored.prescriptions, settings).findings == []
    assert findings(verifier.verify()) == [(named(p, o, v), "removed") for p, o, v, _ in removed]
    assert len(removed) == 1 + 5 + 5 * 2  # opened, five facts, five deliveries of two events


def test_an_edited_access_log_row_is_named(stored, settings):
    _, verifier = sealed(stored, settings)
    edit(settings, "UPDATE drx_access_log SET key_name = 'someone-else' WHERE id = 2")
    assert findings(verifier.verify()) == [("access-log row 2", "changed")]


def test_a_deleted_access_log_row_is_named(stored, settings):
    _, verifier = sealed(stored, settings)
    edit(settings, "DELETE FROM drx_access_log WHERE id = 1")
    assert findings(verifier.verify()) == [("access-log row 1", "removed")]


def test_an_access_row_is_sealed_as_its_values_whichever_way_the_store_keeps_them(stored, settings):
    """PostgreSQL gives jsonb back in its own spacing, SQLite the text written: the content
    sealed is the canonical JSON of the values, the same on both."""
    Sealer(stored.read_db, settings, stored.clock).seal()
    entry = ACCESS_ROWS[1]
    record = {
        "at": entry.at,
        "key_name": entry.key,
        "method": entry.method,
        "path": entry.path,
        "status": entry.status,
        "prescription_ids": sorted(entry.prescription_ids),
        "patient_ids": list(entry.patient_ids),
    }
    ((sealed_digest,),) = fetch(
        settings, "SELECT digest FROM drx_audit_seals WHERE sequence = 'access' AND position = 2"
    )
    assert bytes(sealed_digest) == digest(2, (canonical_record(record),))


def test_seals_rewritten_to_match_an_edited_event_are_caught_by_the_checkpoint(stored, settings):
    _, verifier = sealed(stored, settings)
    column = position_column(settings)
    position = events(settings)[30][0]
    ((state,),) = fetch(settings, f"SELECT state FROM {{events}} WHERE {column} = %s", (position,))
    edit(
        settings,
        f"UPDATE {{events}} SET state = %s WHERE {column} = %s",
        (bytes(state) + b" ", position),
    )
    # The attacker seals the edited event and everything after it again, from the chain before.
    ((previous,),) = fetch(
        settings,
        "SELECT chain FROM drx_audit_seals WHERE sequence = 'events' AND position < %s"
        " ORDER BY position DESC LIMIT 1",
        (position,),
    )
    originator_sql = (
        "uuid_send(originator_id)" if settings.dialect == "postgresql" else "originator_id"
    )
    items = fetch(
        settings,
        f"SELECT {column}, {originator_sql}, originator_version, topic, state FROM {{events}}"
        f" WHERE {column} >= %s ORDER BY 1",
        (position,),
    )
    for row in seal(EVENTS, bytes(previous), items):
        edit(
            settings,
            "UPDATE drx_audit_seals SET digest = %s, chain = %s WHERE sequence = 'events' AND position = %s",
            (row[-2], row[-1], row[0]),
        )
    report = verifier.verify()
    head = report.sequences["events"].last_sealed
    assert [(f.where.split(" (")[0], f.what) for f in report.findings] == [
        (
            "stored checkpoint 1",
            f"events: the stored seal chain at position {head} differs from its digest: seal rows "
            "up to there were rewritten or removed",
        )
    ]


def truncate_with_its_seals(settings, subject: str) -> int:
    """Remove a prescription and its deliveries from the store's tail, their seals and every
    stored checkpoint: what the store and its seals alone show is consistent. The new last
    position."""
    lifecycle = next(
        load_lifecycle(p) for p in LIFECYCLES if load_lifecycle(p)["subject"] == subject
    )
    gone = {str(prescription_id(subject))} | {
        str(delivery_id(e["id"])) for e in lifecycle["events"]
    }
    positions = [e[0] for e in events(settings) if e[1] in gone]
    kept = [e[0] for e in events(settings) if e[1] not in gone]
    assert min(positions) > max(kept)  # the tail
    for originator in gone:
        edit(
            settings,
            "DELETE FROM {events} WHERE originator_id = %s",
            (stored_key(settings, originator),),
        )
    edit(
        settings,
        "DELETE FROM drx_audit_seals WHERE sequence = 'events' AND position > %s",
        (max(kept),),
    )
    edit(settings, "DELETE FROM drx_audit_checkpoints")
    return max(kept)


def test_a_truncation_with_its_seals_and_checkpoints_deleted_is_caught_by_a_kept_checkpoint(
    stored, settings
):
    sealer, verifier = sealed(stored, settings)
    kept = sealer.checkpoint()
    end = truncate_with_its_seals(settings, TRUNCATED)
    assert verifier.verify().findings == []  # the store alone cannot tell
    assert audit(stored.prescriptions, settings).findings == []
    report = verifier.verify([("kept.json", kept)])
    assert [(f.where, f.what) for f in report.findings] == [
        (
            "checkpoint file kept.json",
            f"events: truncated: it sealed {kept.events.count:,} events up to position "
            f"{kept.events.position}; the seals end at position {end}, and the store holds "
            f"{kept.events.count - 12 * 2 - 12 - 1} up to there",
        )
    ]


def test_a_kept_checkpoint_whose_signature_was_changed_is_named(stored, settings):
    key = signing_key()
    sealer, verifier = sealed(stored, settings, key)
    kept = sealer.checkpoint()
    signature = base64.b64decode(kept.signature)
    forged = replace(
        kept, signature=base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
    )
    moved = replace(kept, at="2027-01-01T00:00:00Z")
    report = verifier.verify([("forged.json", forged), ("moved.json", moved), ("kept.json", kept)])
    altered = (
        "its signature does not verify with its public key: it was altered after it was signed"
    )
    assert [(f.where, f.what) for f in report.findings] == [
        ("checkpoint file forged.json", altered),
        ("checkpoint file moved.json", altered),
    ]
    assert report.unsigned == []


def test_a_kept_checkpoint_signed_with_another_key_is_named_when_ours_is_set(stored, settings):
    sealer, _ = sealed(stored, settings, signing_key())
    theirs = sealer.checkpoint()
    ours = SealVerifier(replace(settings, audit_signing_key=signing_key()))
    assert [(f.where, f.what) for f in ours.verify([("theirs.json", theirs)]).findings] == [
        (
            "checkpoint file theirs.json",
            "it is signed with a key other than DRX_AUDIT_SIGNING_KEY's",
        )
    ]
    # Unsigned, with ours set: what a forger without the key would file (a store cut short and
    # sealed again, its signed checkpoints deleted) is a finding too, not a count.
    unsigned = Sealer(stored.read_db, settings, stored.clock).checkpoint()
    report = ours.verify([("unsigned.json", unsigned)])
    assert [(f.where, f.what) for f in report.findings] == [
        (
            "checkpoint file unsigned.json",
            "it is unsigned, though DRX_AUDIT_SIGNING_KEY is set: it must be signed with it",
        )
    ]
    assert "checkpoint file unsigned.json" in report.unsigned
    # Without a key set, an unsigned file is counted as such and checked for the rest.
    assert SealVerifier(settings).verify([("unsigned.json", unsigned)]).findings == []


def test_a_stored_checkpoint_that_was_edited_is_named(stored, settings):
    _, verifier = sealed(stored, settings, signing_key())
    ((document,),) = fetch(settings, "SELECT document FROM drx_audit_checkpoints WHERE id = 1")
    edited = {**json.loads(document), "events": 1}
    edit(
        settings,
        "UPDATE drx_audit_checkpoints SET document = %s WHERE id = 1",
        (json.dumps(edited),),
    )
    edit(settings, "INSERT INTO drx_audit_checkpoints (document) VALUES ('not json')")
    wheres = [(f.where.split(" (")[0], f.what.split(":")[0]) for f in verifier.verify().findings]
    assert wheres == [
        ("stored checkpoint 2", "cannot be read"),
        ("stored checkpoint 1", "events"),
        ("stored checkpoint 1", "its signature does not verify with its public key"),
    ]


def test_two_sealers_at_once_seal_every_item_once_in_order(stored, settings):
    sealers = [Sealer(stored.read_db, settings, stored.clock, batch=7) for _ in range(2)]
    errors: list[BaseException] = []

    def run(sealer: Sealer) -> None:
        try:
            sealer.seal()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(s,)) for s in sealers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = SealVerifier(settings).verify()
    assert report.findings == []
    assert report.sequences["events"].sealed == len(events(settings))
    assert report.sequences["events"].unsealed == 0


def test_the_projectors_loop_seals_and_writes_checkpoints(stored, settings):
    sealer = Sealer(stored.read_db, settings, stored.clock, seal_interval_s=0, checkpoint_every=50)
    projector = stored.projector
    projector.sealer = sealer
    projector.catch_up(watch=True)
    ((count,),) = fetch(settings, "SELECT count(*) FROM drx_audit_checkpoints")
    assert count == 1  # more than 50 items sealed at once
    projector.catch_up(watch=True)
    assert fetch(settings, "SELECT count(*) FROM drx_audit_checkpoints") == [(1,)]  # none new
    assert SealVerifier(settings).verify().sequences["events"].unsealed == 0


def test_a_checkpoint_of_an_empty_store_holds(settings, parts):
    checkpoint = Sealer(parts.read_db, settings, parts.clock).checkpoint()
    assert (checkpoint.events.position, checkpoint.events.count) == (0, 0)
    assert checkpoint.events.digest == GENESIS.hex()
    assert SealVerifier(settings).verify([("empty.json", checkpoint)]).findings == []


def test_the_signer_signs_with_the_keys_public_half(stored, settings):
    key = signing_key()
    sealer, _ = sealed(stored, settings, key)
    checkpoint = sealer.checkpoint()
    assert checkpoint.public_key == CheckpointSigner(key).public_key
    assert len(base64.b64decode(checkpoint.public_key)) == 32
    assert len(base64.b64decode(checkpoint.signature)) == 64


def test_the_loop_seals_a_backlog_a_batch_at_a_time_then_waits(stored, settings):
    sealer = Sealer(
        stored.read_db, settings, stored.clock, batch=10, seal_interval_s=3600, checkpoint_every=20
    )

    def count() -> int:
        return fetch(settings, "SELECT count(*) FROM drx_audit_seals")[0][0]

    def checkpoints() -> list[dict]:
        rows = fetch(settings, "SELECT document FROM drx_audit_checkpoints ORDER BY id")
        return [json.loads(document) for (document,) in rows]

    sealer.tick()
    assert count() == 10 + 3  # a batch of events, the access log's three rows
    assert checkpoints() == []
    sealer.tick()
    assert count() == 20 + 3
    assert [(c["events"], c["access"]["entries"]) for c in checkpoints()] == [(20, 3)]
    total = len(events(settings)) + 3
    ticks = 2
    while count() < total:
        sealer.tick()
        ticks += 1
    assert ticks == -(-len(events(settings)) // 10)
    assert [c["events"] for c in checkpoints()] == list(range(20, len(events(settings)) + 1, 20))
    stored.access_log.append(ACCESS_ROWS[0])
    stored.access_log.flush()
    sealer.tick()  # caught up: the next seal waits for its interval
    assert count() == total
