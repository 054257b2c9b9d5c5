"""`drx audit checkpoint` and `drx audit verify --checkpoint FILE` as an auditor runs them: the
JSON printed, signed or not, kept in a file outside the database, and what it later proves."""

from __future__ import annotations

import base64
import json
import os

import pytest

from domain.ids import delivery_id, prescription_id
from interfaces.bootstrap import bootstrap
from interfaces.cli import main
from tests.helpers import LIFECYCLES, load_lifecycle
from tests.integration.test_audit import deliver_signed, edit, fetch

CHECKPOINT_FIELDS = ["position", "events", "digest", "at", "public_key", "signature", "access"]


@pytest.fixture
def store(settings, monkeypatch):
    """The four lifecycles stored, and the CLI's environment on the store."""
    with bootstrap(settings) as parts:
        for path in LIFECYCLES:
            for event in load_lifecycle(path)["events"]:
                deliver_signed(parts.prescriptions, event, settings.webhook_secrets[0])
    monkeypatch.setenv("DRX_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DRX_WEBHOOK_SECRETS", " ".join(settings.webhook_secrets))
    monkeypatch.setenv("DRX_POSTGRES_SCHEMA", settings.postgres_schema)
    monkeypatch.delenv("DRX_AUDIT_SIGNING_KEY", raising=False)
    return settings


def stored_events(settings) -> int:
    return len(fetch(settings, "SELECT 1 FROM {events}"))


def test_checkpoint_without_a_key_prints_an_unsigned_checkpoint_and_says_so(store, capsys):
    assert main(["audit", "checkpoint"]) == 0
    captured = capsys.readouterr()
    checkpoint = json.loads(captured.out)
    assert list(checkpoint) == CHECKPOINT_FIELDS
    assert checkpoint["events"] == stored_events(store)
    assert checkpoint["position"] == checkpoint["events"]  # no gaps in this store
    assert len(checkpoint["digest"]) == 64
    assert checkpoint["access"] == {"position": 0, "entries": 0, "digest": "0" * 64}
    assert (checkpoint["public_key"], checkpoint["signature"]) == (None, None)
    assert "the checkpoint is unsigned: set DRX_AUDIT_SIGNING_KEY" in captured.err
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("intact: ")
    assert (
        f"seals: {stored_events(store):,} events sealed (0 not yet), 0 access-log rows (0 not "
        "yet); 1 checkpoint(s) checked, 1 of them unsigned"
    ) in out


def test_checkpoint_with_a_key_is_signed_written_to_a_file_and_verified(
    store, capsys, monkeypatch, tmp_path
):
    seed = os.urandom(32)
    monkeypatch.setenv("DRX_AUDIT_SIGNING_KEY", base64.b64encode(seed).decode())
    kept = tmp_path / "kept.json"
    assert main(["audit", "checkpoint", "--output", str(kept)]) == 0
    captured = capsys.readouterr()
    assert json.loads(kept.read_text()) == json.loads(captured.out)
    assert "unsigned" not in captured.err
    checkpoint = json.loads(captured.out)
    assert len(base64.b64decode(checkpoint["public_key"])) == 32
    assert len(base64.b64decode(checkpoint["signature"])) == 64
    assert seed.hex() not in captured.out
    assert main(["audit", "verify", "--checkpoint", str(kept)]) == 0
    assert "2 checkpoint(s) checked\n" in capsys.readouterr().out


def test_a_kept_checkpoint_finds_a_truncation_the_store_alone_cannot(store, capsys, tmp_path):
    kept = tmp_path / "kept.json"
    assert main(["audit", "checkpoint", "--output", str(kept)]) == 0
    position = json.loads(capsys.readouterr().out)["position"]
    subject = "drx_rx_LC0002"  # delivered last: the store's tail
    lifecycle = next(
        load_lifecycle(p) for p in LIFECYCLES if load_lifecycle(p)["subject"] == subject
    )
    gone = [prescription_id(subject), *(delivery_id(e["id"]) for e in lifecycle["events"])]
    for originator in gone:
        key = originator if store.dialect == "postgresql" else originator.hex
        edit(store, "DELETE FROM {events} WHERE originator_id = %s", (key,))
    end = stored_events(store)
    edit(store, "DELETE FROM drx_audit_seals WHERE position > %s", (end,))
    edit(store, "DELETE FROM drx_audit_checkpoints")
    assert main(["audit", "verify"]) == 0  # consistent: nothing left refers to what is gone
    assert capsys.readouterr().out.startswith("intact: ")
    assert main(["audit", "verify", "--checkpoint", str(kept)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT INTACT: 1 finding(s)")
    assert (
        f"  checkpoint file {kept}: events: truncated: it sealed {position:,} events up to "
        f"position {position}; the seals end at position {end}, and the store holds {end} up "
        "to there\n"
    ) in out


def test_a_kept_checkpoint_whose_signature_was_changed_fails_the_audit(
    store, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("DRX_AUDIT_SIGNING_KEY", base64.b64encode(os.urandom(32)).decode())
    assert main(["audit", "checkpoint"]) == 0
    checkpoint = json.loads(capsys.readouterr().out)
    signature = bytearray(base64.b64decode(checkpoint["signature"]))
    signature[10] ^= 0x40
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**checkpoint, "signature": base64.b64encode(signature).decode()}))
    assert main(["audit", "verify", "--checkpoint", str(forged)]) == 1
    out = capsys.readouterr().out
    assert (
        f"  checkpoint file {forged}: its signature does not verify with its public key: it was "
        "altered after it was signed\n"
    ) in out
    assert out.count("\n  ") == 1  # the store itself, and its stored checkpoint, hold


def test_damage_to_the_store_is_named_by_the_seals_in_the_audit(store, capsys):
    assert main(["audit", "checkpoint"]) == 0
    capsys.readouterr()
    column = "notification_id" if store.dialect == "postgresql" else "rowid"
    edit(store, f"DELETE FROM {{events}} WHERE {column} = 2")
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    originator = delivery_id(load_lifecycle(LIFECYCLES[0])["events"][0]["id"])
    assert f"  event 2 ({originator} v2): removed: it was sealed, and it is gone" in out


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read"),
        ("not json", "is not an audit checkpoint: it is not JSON"),
        ('{"position": 1}', "is not an audit checkpoint: `access` is missing"),
    ],
)
def test_a_checkpoint_file_that_cannot_be_used_is_one_line(store, capsys, tmp_path, content, said):
    path = tmp_path / "checkpoint.json"
    if content is not None:
        path.write_text(content)
    assert main(["audit", "verify", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert said in err


def test_a_signing_key_that_is_not_one_is_refused_naming_the_variable_not_the_value(
    store, capsys, monkeypatch
):
    monkeypatch.setenv("DRX_AUDIT_SIGNING_KEY", "c2hvcnQ=")  # "short"
    assert main(["audit", "checkpoint"]) == 2
    err = capsys.readouterr().err
    assert "DRX_AUDIT_SIGNING_KEY must be the base64 of a 32-byte Ed25519 private key seed" in err
    assert "c2hvcnQ" not in err
    assert fetch(store, "SELECT count(*) FROM drx_audit_checkpoints") == [(0,)]
