"""Every mistake a user can make at the command line is one line on standard error, never a
traceback, with exit code 2 (`interfaces/cli.py` documents the codes); and no command but
`serve` and `migrate` makes a store."""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest

from bench.pgcluster import free_port
from interfaces.cli import COMMANDS, main
from tests.conftest import ADMIN_URL
from tests.helpers import FIXTURES, new_secret


def one_line(capsys) -> str:
    """What the command printed on standard error, which must be one line and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line[:4].isdigit()]  # not log records
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("drx: ")
    return lines[0]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory, with nothing configured."""
    monkeypatch.chdir(tmp_path)
    for name in ("DRX_DATABASE_URL", "DRX_WEBHOOK_SECRETS", "DRX_API_KEYS", "DRX_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_migrate_against_a_postgresql_that_does_not_answer(elsewhere, monkeypatch, capsys):
    monkeypatch.setenv("DRX_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/drx")
    assert main(["migrate"]) == 2
    assert "cannot be reached" in one_line(capsys)


@pytest.mark.postgres
def test_migrate_as_a_role_that_does_not_exist(elsewhere, monkeypatch, capsys):
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(ADMIN_URL)
    url = f"postgresql://nobody_here@{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}/x"
    monkeypatch.setenv("DRX_DATABASE_URL", url)
    assert main(["migrate"]) == 2
    assert 'role "nobody_here" does not exist' in one_line(capsys)


@pytest.mark.parametrize(
    "command",
    [
        ["projections", "status"],
        ["projections", "dead-letters"],
        ["projections", "retry"],
        ["projections", "rebuild", "--verify"],
        ["audit", "verify"],
        ["audit", "export", "drx_rx_1"],
    ],
)
def test_a_command_in_a_directory_without_a_store_says_so_and_makes_none(
    elsewhere, monkeypatch, capsys, command
):
    monkeypatch.setenv("DRX_WEBHOOK_SECRETS", new_secret())
    assert main(command) == 2
    assert "there is no store at" in one_line(capsys)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "export", "drx_rx_1"]])
def test_an_audit_without_a_store_or_secrets_names_the_missing_store_first(
    elsewhere, capsys, command
):
    assert main(command) == 2
    assert "there is no store at" in one_line(capsys)


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["serve", "--workers", "0"], "--workers: 0 is not a whole number of at least 1"),
        (["serve", "--port", "70000"], "--port: 70000 is not a port"),
        (["simulate", "--prescriptions", "-3"], "--prescriptions: -3 is not a whole number"),
        (["simulate", "--duplicates", "2"], "--duplicates: 2 is not a share from 0 to 1"),
        (["simulate", "--rate", "0"], "--rate: 0 is not a number above 0"),
        (["simulate", "--connections", "x"], "--connections: 'x' is not a whole number"),
    ],
)
def test_a_number_out_of_range_is_refused_before_anything_runs(elsewhere, capsys, command, said):
    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert said in err
    assert "Traceback" not in err


def test_a_sqlite_url_with_two_slashes_is_refused_and_makes_no_directory(
    elsewhere, monkeypatch, capsys
):
    monkeypatch.setenv("DRX_DATABASE_URL", "sqlite://drx.sqlite3")
    assert main(["migrate"]) == 2
    assert "three slashes" in one_line(capsys)
    assert list(elsewhere.iterdir()) == []


def test_a_sqlite_store_in_a_directory_that_does_not_exist_is_refused(
    elsewhere, monkeypatch, capsys
):
    monkeypatch.setenv("DRX_DATABASE_URL", "sqlite:///no/such/dir/drx.sqlite3")
    assert main(["migrate"]) == 2
    assert "does not exist" in one_line(capsys)
    assert list(elsewhere.iterdir()) == []


def test_send_a_file_that_is_not_there(elsewhere, capsys):
    assert main(["send", "nope.json", "--secret", new_secret()]) == 2
    assert "cannot read nope.json" in one_line(capsys)


def test_send_with_a_secret_that_is_not_one(elsewhere, capsys):
    payload = str(FIXTURES / "examples" / "received.json")
    assert main(["send", payload, "--secret", "not-a-secret"]) == 2
    assert "not a whsec_" in one_line(capsys)


def test_send_to_a_server_that_is_not_there(elsewhere, capsys):
    payload = str(FIXTURES / "examples" / "received.json")
    url = f"http://127.0.0.1:{free_port()}/webhooks/drx"
    assert main(["send", payload, "--secret", new_secret(), "--url", url]) == 2
    assert "nothing answers at" in one_line(capsys)


def test_simulate_against_a_server_that_is_not_there_stops_at_once(elsewhere, capsys):
    url = f"http://127.0.0.1:{free_port()}/webhooks/drx"
    started = time.monotonic()
    assert main(["simulate", "--url", url, "--secret", new_secret(), "--prescriptions", "20"]) == 2
    assert time.monotonic() - started < 10
    assert "nothing answers at" in one_line(capsys)


def test_simulate_with_the_wrong_secret_stops_early_and_says_why(client, elsewhere, capsys):
    """Against a real server (the test client's app on uvicorn is not needed: a 401 from any
    signed endpoint is the same answer), the simulator learns within its first attempts."""
    from tests.e2e.test_processes import Server, server_env

    secret = new_secret()
    server = Server(server_env(client.app.state.parts.settings, secret), elsewhere)
    try:
        started = time.monotonic()
        code = main(["simulate", "--url", f"{server.url}/webhooks/drx", "--secret", new_secret()])
        assert time.monotonic() - started < 15
    finally:
        server.kill()
    assert code == 2
    assert "refused as unsigned (401)" in one_line(capsys)


def test_send_and_simulate_told_no_by_a_real_server_say_which_setting_is_wrong(
    client, elsewhere, capsys
):
    """A well-formed secret the server does not accept, an API key it does not accept: one
    line each, naming the setting, not answers to read through or a state check that fails."""
    from tests.e2e.test_processes import Server, server_env

    secret = new_secret()
    server = Server(server_env(client.app.state.parts.settings, secret), elsewhere)
    webhook = f"{server.url}/webhooks/drx"
    payload = str(FIXTURES / "examples" / "received.json")
    try:
        assert main(["send", payload, "--url", webhook, "--secret", new_secret()]) == 2
        assert "refused the signature" in one_line(capsys)
        simulate = ["simulate", "--url", webhook, "--secret", secret, "--prescriptions", "2"]
        assert main([*simulate, "--api-key", "not-a-key"]) == 2
        err = capsys.readouterr().err  # the sending went well: its progress line is there too
        said = [line for line in err.splitlines() if line.startswith("drx: ")]
        assert "Traceback" not in err
        assert len(said) == 1
        assert "refused the API key (401)" in said[0]
    finally:
        server.kill()


def test_audit_verify_with_the_wrong_encryption_key_names_the_key(tmp_path, monkeypatch, capsys):
    from infrastructure.migrations import migrate
    from infrastructure.settings import Settings
    from tests.helpers import deliver, load_example

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'drx.sqlite3'}"
    key, other = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    settings = Settings(database_url=url, encryption_key=key)
    migrate(settings)
    from interfaces.bootstrap import bootstrap

    with bootstrap(settings) as parts:
        deliver(parts.prescriptions, load_example("received"))
    monkeypatch.setenv("DRX_DATABASE_URL", url)
    monkeypatch.setenv("DRX_ENCRYPTION_KEY", other)
    monkeypatch.setenv("DRX_WEBHOOK_SECRETS", new_secret())
    assert main(["audit", "verify"]) == 2
    assert "cannot be read with DRX_ENCRYPTION_KEY" in one_line(capsys)
    capsys.readouterr()


def test_serve_on_a_port_in_use_says_so_before_serving(elsewhere, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert main(["serve", "--port", str(port)]) == 2
        assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "serving on" not in err
    assert f"drx: 127.0.0.1:{port} is in use" in err
    assert "Traceback" not in err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, _ in COMMANDS:
        assert f"drx {name}" in out


@pytest.mark.parametrize(
    "command",
    [
        ["subscriptions", "add", "http://127.0.0.1:9/h", "--description", "a\udcffb"],
        ["subscriptions", "pause", "sub_\udcff"],
        ["audit", "access", "--patient", "drx_pt_\udcff"],
    ],
)
def test_an_argument_that_is_not_utf8_is_one_line_not_a_traceback(elsewhere, capsys, command):
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates, which
    the database's driver cannot encode: a traceback deep in the command, once."""
    assert main(["migrate"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 2
    assert "is not UTF-8 text" in one_line(capsys)
