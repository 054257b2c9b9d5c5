"""The audit and rebuild commands as an operator runs them: output and exit codes."""

from __future__ import annotations

import pytest

from infrastructure.access_log import Access
from infrastructure.database import open_read_database
from interfaces.bootstrap import bootstrap
from interfaces.cli import main
from tests.helpers import LIFECYCLES, load_lifecycle, post_signed, serving, settle


@pytest.fixture
def served(settings, monkeypatch):
    """A store with four lifecycles delivered through HTTP, and the CLI's environment on it."""
    with serving(settings) as client:
        for path in LIFECYCLES:
            for event in load_lifecycle(path)["events"]:
                post_signed(client, event)
        settle(client)
    monkeypatch.setenv("DRX_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DRX_WEBHOOK_SECRETS", " ".join(settings.webhook_secrets))
    monkeypatch.setenv("DRX_API_KEYS", ",".join(settings.api_keys))
    monkeypatch.setenv("DRX_POSTGRES_SCHEMA", settings.postgres_schema)
    return settings


def test_audit_verify_passes_on_an_intact_store_and_fails_naming_the_damage(served, capsys):
    assert main(["audit", "verify"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("intact: ")
    assert " snapshots; every chain holds" in printed.out
    # Each pass says how far it is (plain lines where stderr is no terminal), the snapshots too.
    assert [line.split(":")[0] for line in printed.err.splitlines()][:2] == ["audit", "snapshots"]
    db = open_read_database(served)
    table = "drx_events" if served.dialect == "postgresql" else "stored_events"
    with db.transaction() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE topic LIKE %s", ("%Prescription.Delivered",))
    db.close()
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT INTACT: ")
    assert "delivery evt_drx_rx_LC0001_008: was applied but its fact is missing" in out


def test_rebuild_verify_exits_1_naming_each_difference_and_rebuild_repairs(served, capsys):
    assert main(["projections", "rebuild", "--verify"]) == 0
    assert "the live model equals the rebuilt one" in capsys.readouterr().out
    db = open_read_database(served)
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE rx_prescriptions SET needs_review = TRUE WHERE prescription_id = %s",
            ("drx_rx_LC0004",),
        )
    db.close()
    assert main(["projections", "rebuild", "prescriptions", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "drx_rx_LC0004  needs_review: live=True rebuilt=False" in out
    assert main(["projections", "rebuild", "prescriptions"]) == 0
    assert "replaced the live one" in capsys.readouterr().out
    assert main(["projections", "rebuild", "--verify"]) == 0


def _tamper_with_lc0004(settings) -> None:
    db = open_read_database(settings)
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE rx_prescriptions SET needs_review = TRUE WHERE prescription_id = %s",
            ("drx_rx_LC0004",),
        )
        cursor.execute(
            "UPDATE rx_deliveries SET status = 'parked' WHERE event_id = %s",
            ("evt_drx_rx_LC0004_001",),
        )
    db.close()


def test_rebuild_verify_records_whom_the_values_it_prints_are_about(served, capsys, monkeypatch):
    """The differences' values are patient data: the access log names the prescription and
    the patient of each row shown, the deliveries' rows included, before they are printed."""
    monkeypatch.setattr("getpass.getuser", lambda: "auditor-jo")
    _tamper_with_lc0004(served)
    assert main(["projections", "rebuild", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "drx_rx_LC0004  needs_review: live=True rebuilt=False" in out
    assert "evt_drx_rx_LC0004_001  status: live='parked'" in out
    assert main(["audit", "access", "--key", "cli:auditor-jo"]) == 0
    listed = capsys.readouterr().out.splitlines()
    verified = [line for line in listed if "drx projections rebuild --verify" in line]
    # one entry for each projection that differs, each naming whom its rows are about
    assert len(verified) == 2, listed
    assert all("prescriptions drx_rx_LC0004" in line for line in verified), verified
    # the prescriptions' row holds its patient's id; a delivery's status names no patient
    assert sorted(line.rsplit("patients ", 1)[1] for line in verified) == ["-", "drx_pt_TEST01"]


def test_rebuild_verify_records_both_patients_of_a_differing_patient_id_and_no_none(
    served, capsys, monkeypatch
):
    monkeypatch.setattr("getpass.getuser", lambda: "auditor-jo")
    db = open_read_database(served)
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE rx_prescriptions SET patient_id = %s WHERE prescription_id = %s",
            ("drx_pt_OTHER", "drx_rx_LC0004"),
        )
        cursor.execute(
            "UPDATE rx_prescriptions SET patient_id = NULL WHERE prescription_id = %s",
            ("drx_rx_LC0003",),
        )
    db.close()
    assert main(["projections", "rebuild", "prescriptions", "--verify"]) == 1
    assert "patient_id: live='drx_pt_OTHER' rebuilt='drx_pt_TEST01'" in capsys.readouterr().out
    assert main(["audit", "access", "--key", "cli:auditor-jo"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "rebuild --verify" in x]
    patients = set(line.rsplit("patients ", 1)[1].split(","))
    assert patients == {"drx_pt_OTHER", "drx_pt_TEST01"}, line  # a live NULL is no "None"


def test_rebuild_verify_shows_no_values_when_the_access_log_cannot_be_written(
    served, capsys, monkeypatch
):
    from interfaces import access_commands

    def refuse(*_args, **_kwargs):
        raise access_commands.AccessNotRecordedError("the PHI access log cannot be written now")

    monkeypatch.setattr(access_commands, "record_carried", refuse)  # as record_differences
    _tamper_with_lc0004(served)
    assert main(["projections", "rebuild", "prescriptions", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "the values are not shown" in out
    assert "drx_rx_LC0004  needs_review\n" in out
    assert "live=" not in out


def test_audit_export_prints_one_json_document(served, capsys):
    import json

    assert main(["audit", "export", "drx_rx_LC0003"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verification"] == {
        "chain_intact": True,
        "every_fact_has_its_delivery": True,
        "every_signature_verified": True,
    }
    assert len(document["deliveries"]) == 5
    assert main(["audit", "export", "drx_rx_nobody"]) == 2


def test_keys_are_created_listed_and_revoked_and_only_their_hashes_kept(
    served, capsys, monkeypatch
):
    assert main(["keys", "create", "billing-app", "--scopes", "read,audit"]) == 0
    out = capsys.readouterr().out
    key = next(line.split()[1] for line in out.splitlines() if line.startswith("key "))
    assert key.startswith("drx_")
    assert main(["keys", "create", "billing-app"]) == 2  # the name is taken
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "create", "DRX_API_KEYS[7]"]) == 2  # how the log names unnamed ones
    assert "the access log's own" in capsys.readouterr().err
    assert main(["keys", "create", "cli:root"]) == 2  # how it names a command's user
    assert "without ':'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse's refusal: exit 2, one line
        main(["keys", "create", "x", "--scopes", "write"])
    assert refused.value.code == 2
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "billing-app  read,audit  created " in listed
    assert "active" in listed
    assert key not in listed
    db = open_read_database(served)
    assert key not in str(db.query("SELECT * FROM drx_api_keys"))
    db.close()
    assert main(["keys", "revoke", "billing-app"]) == 0
    capsys.readouterr()
    assert main(["keys", "revoke", "billing-app"]) == 2
    capsys.readouterr()
    # One of DRX_API_KEYS (the tests' key, unnamed): not "no key named", which keys list shows
    assert main(["keys", "revoke", "DRX_API_KEYS[1]"]) == 2
    assert "comes from DRX_API_KEYS, not the store" in capsys.readouterr().err
    # A stored key whose name DRX_API_KEYS also has (given it later) is revoked all the same.
    assert main(["keys", "create", "twin"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("DRX_API_KEYS", f"{served.api_keys[0]},twin:some_other_key_0123456789")
    assert main(["keys", "revoke", "twin"]) == 0
    assert main(["keys", "list"]) == 0
    assert any(
        line.startswith("twin  read  created") and "revoked" in line
        for line in capsys.readouterr().out.splitlines()
    )
    assert main(["keys", "list"]) == 0
    assert "billing-app  read,audit  created" in capsys.readouterr().out


def test_audit_export_is_an_access_and_audit_access_lists_it(served, capsys, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "auditor-jo")
    assert main(["audit", "export", "drx_rx_LC0001"]) == 0
    capsys.readouterr()
    assert main(["audit", "access", "--prescription", "drx_rx_LC0001"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[-1] == "1 entry"
    assert "cli:auditor-jo  CLI drx audit export  200  prescriptions drx_rx_LC0001" in lines[0]
    assert main(["audit", "access", "--key", "nobody"]) == 0
    assert capsys.readouterr().out == "0 entries\n"
    # each listing is on the record too, with the ids it printed
    assert main(["audit", "access", "--key", "cli:auditor-jo"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-1] == "3 entries"
    assert (
        "CLI drx audit access --prescription drx_rx_LC0001  200  prescriptions drx_rx_LC0001"
        in listed[1]
    )
    assert "CLI drx audit access  200  prescriptions -  patients -" in listed[2]  # --key dropped
    with pytest.raises(SystemExit) as refused:
        main(["audit", "access", "--since", "2025-13-01"])
    assert refused.value.code == 2


def test_audit_access_prints_control_characters_of_a_path_escaped(served, capsys):
    """A path is the caller's text (a 404 on a PHI path is on the record too): a CR or an
    escape sequence in it must not rewrite the auditor's screen."""
    forged = "/prescriptions/x\r2026-12-01T09:00:00Z  nurse-jane  GET /prescriptions/y\x1b[1A"
    with bootstrap(served) as parts:
        parts.access_log.append(
            Access("2026-12-01T09:00:00.000000Z", "app", "GET", forged, 404, (), ())
        )
        assert parts.access_log.flush() == 1
    assert main(["audit", "access", "--key", "app"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out
    assert "\x1b" not in out
    assert (
        "/prescriptions/x\\r2026-12-01T09:00:00Z  nurse-jane  GET /prescriptions/y\\x1b[1A" in out
    )
