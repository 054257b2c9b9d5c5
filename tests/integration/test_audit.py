"""Audit on real stores: edits made behind the service's back are found and named; an untouched
store passes. Each test damages one thing, the way an attacker or a faulty script would."""

from __future__ import annotations

import json
import threading

import pytest

from bench.history_cost import payload
from domain.audit import Auditor
from domain.ids import delivery_id, prescription_id
from infrastructure.database import open_read_database
from infrastructure.projector import projector_for
from infrastructure.rebuild import Rebuilder
from interfaces.documents import export_prescription
from interfaces.drx.signature import SignatureVerifier
from interfaces.drx.translator import parse_envelope, stored_fact, translate
from tests.helpers import (
    LIFECYCLES,
    body_of,
    intake_for,
    load_lifecycle,
    new_secret,
    post_signed,
    relabelled,
    serving,
    settle,
    signed_headers,
)

SUBJECT = "drx_rx_LC0001"  # mail order with change: 8 facts


def deliver_signed(app, payload, secret):
    body = body_of(payload)
    signed = SignatureVerifier([secret]).verify(body, signed_headers(body, secret))
    command = translate(parse_envelope(body), body, signed)
    return intake_for(app).take(command)


@pytest.fixture
def stored(settings, prescriptions):
    secret = settings.webhook_secrets[0]
    for path in LIFECYCLES:
        for event in load_lifecycle(path)["events"]:
            deliver_signed(prescriptions, event, secret)
    return prescriptions


def events_table(settings) -> str:
    return "drx_events" if settings.dialect == "postgresql" else "stored_events"


def key(settings, subject: str):
    aggregate_id = prescription_id(subject)
    return aggregate_id if settings.dialect == "postgresql" else aggregate_id.hex


def edit(settings, sql: str, params=()) -> int:
    db = open_read_database(settings)
    try:
        with db.transaction() as cursor:
            cursor.execute(sql.replace("{events}", events_table(settings)), params)
            return cursor.rowcount
    finally:
        db.close()


def fetch(settings, sql: str, params=()):
    db = open_read_database(settings)
    try:
        return db.query(sql.replace("{events}", events_table(settings)), params)
    finally:
        db.close()


def audit(stored, settings):
    return auditor(stored, settings.webhook_secrets).verify()


def auditor(app, secrets):
    """The auditor as the bootstrap builds it, over these secrets."""
    return Auditor(app, SignatureVerifier(secrets).matches, stored_fact)


def findings(report) -> list[str]:
    return [f"{f.where}: {f.what}" for f in report.findings]


def test_an_untouched_store_is_intact(stored, settings):
    report = audit(stored, settings)
    assert findings(report) == []
    assert (report.prescriptions, report.facts, report.deliveries) == (4, 30, 30)


def test_a_changed_field_of_a_stored_fact_is_named(stored, settings):
    rows = fetch(
        settings,
        "SELECT originator_version, state FROM {events} WHERE originator_id = %s AND topic LIKE %s",
        (key(settings, SUBJECT), "%Prescription.Shipped"),
    )
    version, state = rows[0]
    tampered = bytes(state).replace(b"USPS", b"FedX")
    assert tampered != bytes(state)
    edit(
        settings,
        "UPDATE {events} SET state = %s WHERE originator_id = %s AND originator_version = %s",
        (tampered, key(settings, SUBJECT), version),
    )
    found = findings(audit(stored, settings))
    assert (
        f"prescription {SUBJECT}: fact {version - 1} (evt_drx_rx_LC0001_007, drx.prescription.shipped): "
        "its content, time or place differs from what was recorded" in found
    )
    assert "delivery evt_drx_rx_LC0001_007: its fact's data differs from what DRx sent" in found
    assert len(found) == 2  # the facts after it still chain to its stored hash


def test_a_deleted_fact_is_named_as_a_gap(stored, settings):
    assert (
        edit(
            settings,
            "DELETE FROM {events} WHERE originator_id = %s AND originator_version = 4",
            (key(settings, SUBJECT),),
        )
        == 1
    )
    found = findings(audit(stored, settings))
    assert any(
        f.startswith(f"prescription {SUBJECT}: fact 4 ") and "where fact 3 should be" in f
        for f in found
    ), found
    assert "delivery evt_drx_rx_LC0001_003: was applied but its fact is missing" in found


def test_two_reordered_facts_are_named(stored, settings):
    k = key(settings, SUBJECT)
    edit(
        settings,
        "UPDATE {events} SET originator_version = -1 WHERE originator_id = %s AND originator_version = 3",
        (k,),
    )
    edit(
        settings,
        "UPDATE {events} SET originator_version = 3 WHERE originator_id = %s AND originator_version = 4",
        (k,),
    )
    edit(
        settings,
        "UPDATE {events} SET originator_version = 4 WHERE originator_id = %s AND originator_version = -1",
        (k,),
    )
    found = [
        f for f in findings(audit(stored, settings)) if f.startswith(f"prescription {SUBJECT}")
    ]
    assert len(found) == 2, found
    assert all("content, time or place differs" in f or "out of order" in f for f in found), found


def test_an_altered_raw_delivery_fails_its_signature(stored, settings):
    rows = fetch(
        settings,
        "SELECT originator_id, state FROM {events} WHERE topic LIKE %s",
        ("%Delivery.Received",),
    )
    originator_id, state = next(
        (oid, json.loads(bytes(state)))
        for oid, state in rows
        if b"evt_drx_rx_LC0002_004" in bytes(state)
    )
    altered = state["body"].replace('"refills_remaining": 1', '"refills_remaining": 9')
    assert altered != state["body"]
    edit(
        settings,
        "UPDATE {events} SET state = %s WHERE originator_id = %s AND originator_version = 1",
        (json.dumps({**state, "body": altered}).encode(), originator_id),
    )
    found = findings(audit(stored, settings))
    assert any(
        f.startswith("delivery evt_drx_rx_LC0002_004: DRx's signature does not verify")
        for f in found
    ), found
    assert "delivery evt_drx_rx_LC0002_004: its fact's data differs from what DRx sent" in found


def test_a_retired_secret_kept_for_verification_still_verifies(stored, settings):
    report = auditor(stored, (new_secret(), *settings.webhook_secrets)).verify()
    assert report.intact
    without = auditor(stored, (new_secret(),)).verify()
    assert len(without.findings) == 30  # every delivery: signed with a secret it does not know


def rebuilt(stored, settings, *, verify):
    db = open_read_database(settings)
    runner = projector_for(stored, db, settings)
    try:
        runner.catch_up()
        return [
            Rebuilder(stored, db).rebuild(name, verify=verify)
            for name in ("prescriptions", "deliveries")
        ]
    finally:
        runner.stop()
        db.close()


def test_rebuild_verify_passes_on_an_untouched_store_and_names_a_changed_row(stored, settings):
    assert [r.differences for r in rebuilt(stored, settings, verify=True)] == [[], []]
    edit(
        settings,
        "UPDATE rx_prescriptions SET status = 'cancelled' WHERE prescription_id = %s",
        (SUBJECT,),
    )
    edit(
        settings,
        "UPDATE rx_deliveries SET reason = 'edited' WHERE event_id = %s",
        ("evt_drx_rx_LC0003_002",),
    )
    results = rebuilt(stored, settings, verify=True)
    named = [(d.key, d.field, d.live, d.rebuilt) for r in results for d in r.differences]
    assert named == [
        (SUBJECT, "status", "cancelled", "delivered"),
        ("evt_drx_rx_LC0003_002", "reason", "edited", None),
    ]
    assert not any(r.swapped for r in results)
    assert fetch(
        settings, "SELECT status FROM rx_prescriptions WHERE prescription_id = %s", (SUBJECT,)
    ) == [("cancelled",)]


def test_a_rebuild_swaps_in_a_model_that_equals_the_store(stored, settings):
    edit(settings, "DELETE FROM rx_prescriptions WHERE prescription_id = %s", (SUBJECT,))
    rebuilt(stored, settings, verify=True)  # the runner projected first; the deleted row is gone
    results = rebuilt(stored, settings, verify=False)
    assert all(r.swapped for r in results)
    state = json.loads(
        fetch(
            settings, "SELECT state FROM rx_prescriptions WHERE prescription_id = %s", (SUBJECT,)
        )[0][0]
    )
    assert state == stored.state(SUBJECT).as_dict()
    assert [r.differences for r in rebuilt(stored, settings, verify=True)] == [[], []]


def test_the_audit_export_holds_history_deliveries_and_verdicts(stored, settings):
    document = export_prescription(stored, SignatureVerifier(settings.webhook_secrets), SUBJECT, [])
    assert document["state"] == stored.state(SUBJECT).as_dict()
    assert [e["version"] for e in document["history"]["events"]] == list(range(1, 9))
    assert all(e["chain_ok"] and len(e["hash"]) == 64 for e in document["history"]["events"])
    assert len(document["deliveries"]) == 8
    assert document["verification"] == {
        "chain_intact": True,
        "every_fact_has_its_delivery": True,
        "every_signature_verified": True,
    }


def test_a_rebuild_while_deliveries_arrive_ends_equal_to_the_store_and_queries_keep_answering(
    settings,
):
    events = [
        e
        for n in range(6)
        for path in LIFECYCLES
        for e in relabelled(load_lifecycle(path), f"r{n}")
    ]
    with serving(settings) as client:
        for event in events[: len(events) // 2]:
            post_signed(client, event)
        settle(client)
        stop, statuses = threading.Event(), []

        def keep_delivering() -> None:
            for event in events[len(events) // 2 :]:
                post_signed(client, event)

        def keep_reading() -> None:
            while not stop.is_set():
                statuses.append(client.get("/prescriptions", params={"limit": 500}).status_code)

        workers = [threading.Thread(target=keep_delivering), threading.Thread(target=keep_reading)]
        for worker in workers:
            worker.start()
        services = client.app.state.parts
        try:
            results = [
                Rebuilder(services.prescriptions, services.read_db).rebuild(name, verify=False)
                for name in ("prescriptions", "deliveries")
            ]
        finally:
            workers[0].join()
            stop.set()
            workers[1].join()
        settle(client)
        assert all(r.swapped for r in results)
        assert statuses
        assert set(statuses) == {200}
        items = client.get("/prescriptions", params={"limit": 500}).json()["items"]
        assert len(items) == len({e["subject"] for e in events})
        for item in items:
            assert item == services.prescriptions.state(item["prescription_id"]).as_dict()
        listed = client.get("/deliveries", params={"limit": 500}).json()["items"]
        assert len(listed) == len(events)
        assert {d["status"] for d in listed} == {"processed"}


def test_a_fact_stored_before_the_chain_existed_is_upcast_and_reported_not_covered(
    stored, settings
):
    rows = fetch(
        settings,
        "SELECT originator_version, state FROM {events} WHERE originator_id = %s AND topic LIKE %s",
        (key(settings, SUBJECT), "%Prescription.Sent"),
    )
    version, state = rows[0]
    old = json.loads(bytes(state))
    del old["hash"], old["class_version"]  # the shape of a version 1 event
    edit(
        settings,
        "UPDATE {events} SET state = %s WHERE originator_id = %s AND originator_version = %s",
        (json.dumps(old).encode(), key(settings, SUBJECT), version),
    )
    history = stored.history(SUBJECT)
    assert history[version - 2].hash == ""
    found = findings(audit(stored, settings))
    assert found[0] == (
        f"prescription {SUBJECT}: fact {version - 1} (evt_drx_rx_LC0001_002, "
        "drx.prescription.sent): recorded before hash chaining: not covered by the chain"
    )


def test_corrections_and_conflicting_copies_are_verified_and_a_corrected_fact_matches(
    stored, settings
):
    """A corrected delivery's fact must match the correction (not the parked body), and every
    body kept (conflicting copies too) must carry DRx's signature."""
    secret = settings.webhook_secrets[0]
    base = relabelled(load_lifecycle(LIFECYCLES[0]), "audit")[0]
    broken = {**base, "data": {**base["data"], "written_on": 20250101}}
    assert deliver_signed(stored, broken, secret).outcome.value == "parked"
    assert deliver_signed(stored, base, secret).outcome.value == "accepted"
    other = {**base, "data": {**base["data"], "notes": "a different body"}}
    assert deliver_signed(stored, other, secret).outcome.value == "conflict"
    assert findings(audit(stored, settings)) == []
    ((state,),) = fetch(settings, "SELECT state FROM {events} WHERE topic LIKE %s", ("%Conflict%",))
    tampered = bytes(state).replace(b"a different body", b"a tampered body")
    edit(settings, "UPDATE {events} SET state = %s WHERE topic LIKE %s", (tampered, "%Conflict%"))
    assert [line for line in findings(audit(stored, settings)) if "signature" in line] == [
        f"delivery {base['id']} (a conflicting copy): DRx's signature does not verify with any "
        "configured secret: the stored body or headers were altered, or the secret is not "
        "configured"
    ]


# Snapshots: a cache, checked against the facts they fold (a new fact is recorded on one)


def snapshots_table(settings) -> str:
    return "stored_snapshots" if settings.dialect == "sqlite" else "drx_snapshots"


def edit_snapshot(settings, subject: str, change) -> int:
    """Rewrite the prescription's last snapshot: its state as `change(state)` gives it (bytes:
    the whole row's); its version."""
    table = snapshots_table(settings)
    rows = fetch(
        settings,
        f"SELECT originator_version, state FROM {table} WHERE originator_id = %s"
        " ORDER BY originator_version DESC",
        (key(settings, subject),),
    )
    version, stored = rows[0]
    stored = json.loads(bytes(stored))  # the library's: the snapshot's `state` in it
    edited = change(stored["state"])
    if not isinstance(edited, bytes):
        edited = json.dumps({**stored, "state": edited}).encode()
    edit(
        settings,
        f"UPDATE {table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
        (edited, key(settings, subject), version),
    )
    return version


def test_each_prescriptions_last_snapshot_is_checked_against_its_facts(stored, settings):
    report = audit(stored, settings)
    assert findings(report) == []
    assert report.snapshots >= 1  # SUBJECT's 8 facts: one at version 8


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("fold", None, "state"),  # the status in it, below
        ("last_hash", "0" * 64, "chain's tail"),
        ("fact_count", 3, "fact count"),
    ],
)
def test_a_snapshot_that_differs_from_its_facts_is_named_without_its_values(
    stored, settings, field, value, named
):
    def change(state):
        if field == "fold":
            fold = json.loads(state["fold"])
            assert fold["status"] != "on_hold"
            state["fold"] = json.dumps({**fold, "status": "on_hold"})
        else:
            state[field] = value
        return state

    version = edit_snapshot(settings, SUBJECT, change)
    found = findings(audit(stored, settings))
    assert found == [
        f"prescription {SUBJECT}: its snapshot at version {version} differs from its stored "
        f"facts ({named}): a snapshot is a cache: delete the snapshots (docs/operations.md, "
        "Snapshots), and loads fold the stored facts again"
    ]
    assert "on_hold" not in found[0]
    assert "0" * 64 not in found[0]


def test_a_snapshot_that_no_longer_decodes_is_named(stored, settings):
    edit_snapshot(settings, SUBJECT, lambda state: b"\x00not json")
    found = findings(audit(stored, settings))
    assert len(found) == 1
    assert found[0].startswith(f"prescription {SUBJECT}: its last snapshot cannot be read (")


def seven_facts(app, settings) -> str:
    """One prescription of 7 facts: versions 1-8, its last snapshot at 8, its last version."""
    for number in range(1, 8):
        deliver_signed(app, payload(0, number), settings.webhook_secrets[0])
    return "drx_rx_hist_00000"


def test_a_fact_that_no_longer_decodes_is_not_blamed_on_the_snapshot(prescriptions, settings):
    subject = seven_facts(prescriptions, settings)
    edit(
        settings,
        "UPDATE {events} SET state = %s WHERE originator_id = %s AND originator_version = 8",
        (b"\x00not json", key(settings, subject)),
    )
    found = findings(audit(prescriptions, settings))
    assert any(
        f.endswith("v8: cannot be read any more (MapperDeserialisationError)") for f in found
    )
    assert not [f for f in found if "snapshot" in f]


def test_facts_removed_from_the_end_are_named_by_the_snapshot_which_is_to_be_kept(
    prescriptions, settings
):
    subject = seven_facts(prescriptions, settings)
    # The last fact and its delivery's events: no gap in the chain, nothing left refers to it.
    edit(
        settings,
        "DELETE FROM {events} WHERE originator_id = %s AND originator_version = 8",
        (key(settings, subject),),
    )
    edit(
        settings,
        "DELETE FROM {events} WHERE originator_id = %s",
        (key_of(settings, delivery_id(payload(0, 7)["id"])),),
    )
    assert findings(audit(prescriptions, settings)) == [
        f"prescription {subject}: its history ends at version 7, but its last snapshot was "
        "taken at version 8 on 7 facts: events were removed from its end. Keep the snapshot "
        "(it is what shows it) and restore the history from a backup"
    ]


def key_of(settings, aggregate_id):
    return aggregate_id if settings.dialect == "postgresql" else aggregate_id.hex


@pytest.mark.parametrize("field", ["subject", "last", "fact_count"])
def test_a_snapshot_edited_into_another_shape_is_named_not_a_crash(stored, settings, field):
    def change(state):
        if field == "subject":
            del state["subject"]
        else:
            state[field] = 7 if field == "last" else "seven"
        return state

    edit_snapshot(settings, SUBJECT, change)
    [finding] = findings(audit(stored, settings))
    assert finding.startswith(f"prescription {SUBJECT}: its ")
    assert "snapshot" in finding
