"""Encryption at rest (DRX_ENCRYPTION_KEY): the event store holds no readable fact, payload or
signature; everything reads back as without it; a store cannot be opened with the wrong key."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re

import pytest

from infrastructure.database import open_read_database
from infrastructure.eventstore import StoreKeyError, check_store_readable, open_prescriptions
from infrastructure.projector import projector_for
from infrastructure.queries import ReadQueries
from tests.helpers import LIFECYCLES, deliver, load_example, load_lifecycle
from tests.integration.test_audit import audit, deliver_signed, fetch, findings


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def encrypted(settings):
    return dataclasses.replace(settings, encryption_key=new_key())


@pytest.fixture
def app(encrypted):
    prescriptions = open_prescriptions(encrypted)
    yield prescriptions
    prescriptions.close()


def test_the_store_holds_nothing_readable_and_everything_reads_back(app, encrypted):
    secret = encrypted.webhook_secrets[0]
    receipts = [
        deliver_signed(app, event, secret)
        for path in LIFECYCLES
        for event in load_lifecycle(path)["events"]
    ]
    # Every lifecycle's facts again, on one prescription: enough of them to be snapshotted.
    again = [e for path in LIFECYCLES for e in load_lifecycle(path)["events"]]
    receipts += [
        deliver_signed(app, {**e, "id": e["id"] + "_again", "subject": "drx_rx_again"}, secret)
        for e in again
    ]
    snapshots = "stored_snapshots" if encrypted.dialect == "sqlite" else "drx_snapshots"
    kept = fetch(encrypted, f"SELECT state FROM {snapshots}")
    assert len(kept) > 2
    states = b"".join(bytes(r[0]) for r in fetch(encrypted, "SELECT state FROM {events}"))
    states += b"".join(bytes(r[0]) for r in kept)
    assert len(states) > 10_000
    for clear in (b"McExample", b"Testy", b"drx_pt_TEST01", b"evt_drx_rx_", b"msg_"):
        assert clear not in states, clear
    # A signature whole: its 3-byte prefix alone turns up in random bytes (about once in 300
    # runs of this test), a 44-character base64 MAC after it never.
    assert re.search(rb"v1,[A-Za-z0-9+/]{43}=", states) is None
    # Everything above the store is as without encryption: the state, the audit, the projection.
    subjects = [load_lifecycle(path)["events"][0]["subject"] for path in LIFECYCLES]
    assert all(app.state(s).patient.last_name == "McExample" for s in subjects)  # type: ignore[union-attr]
    report = audit(app, encrypted)
    assert findings(report) == []
    assert report.deliveries == len(receipts)
    parked = {**load_example("shipped"), "type": "drx.prescription.teleported"}
    assert deliver(app, parked) == "parked"
    db = open_read_database(encrypted)
    runner = projector_for(app, db, encrypted)
    try:
        runner.catch_up()
        model = ReadQueries(db)
        for subject in subjects:
            listed = model.prescription_json(subject)
            assert listed is not None
            assert json.loads(listed[0]) == app.state(subject).as_dict()
        assert model.waiting_counts()["parked"] == 1
    finally:
        runner.stop()
        db.close()


def test_a_store_is_refused_with_another_key_or_without_its_key(app, encrypted, settings):
    check_store_readable(encrypted)  # an empty store: any key will do
    deliver(app, load_example("received"))
    check_store_readable(encrypted)
    with pytest.raises(StoreKeyError, match="not the one the store was written with"):
        check_store_readable(dataclasses.replace(encrypted, encryption_key=new_key()))
    with pytest.raises(StoreKeyError, match="written with encryption"):
        check_store_readable(dataclasses.replace(encrypted, encryption_key=""))


def test_a_clear_store_is_refused_with_a_key(prescriptions, settings):
    deliver(prescriptions, load_example("received"))
    check_store_readable(settings)
    with pytest.raises(StoreKeyError, match="or the store was written without encryption"):
        check_store_readable(dataclasses.replace(settings, encryption_key=new_key()))


def test_drx_serve_refuses_to_start_on_a_store_its_key_cannot_read(tmp_path, monkeypatch, capsys):
    from infrastructure.migrations import migrate
    from interfaces.cli import main
    from tests.conftest import sqlite_settings

    written = sqlite_settings(tmp_path, encryption_key=new_key())
    migrate(written)
    app = open_prescriptions(written)
    deliver(app, load_example("received"))
    app.close()
    other = new_key()
    monkeypatch.setenv("DRX_DATABASE_URL", written.database_url)
    monkeypatch.setenv("DRX_WEBHOOK_SECRETS", written.webhook_secrets[0])
    monkeypatch.setenv("DRX_API_KEYS", written.api_keys[0])
    monkeypatch.setenv("DRX_ENCRYPTION_KEY", other)
    assert main(["serve", "--port", "0"]) == 2
    said = capsys.readouterr().err
    assert "DRX_ENCRYPTION_KEY" in said
    assert other not in said
    assert written.encryption_key not in said
