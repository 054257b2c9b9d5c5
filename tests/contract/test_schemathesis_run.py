"""`schemathesis run` against a running `drx serve`, as a client from outside, with all its
checks: it must find nothing. (Beside `test_openapi.py`, which draws cases in this process.)
It cannot sign webhooks, so it sees `POST /webhooks/drx` answer 401, which it counts as a warning,
not a failure; the signed webhook is tested everywhere else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infrastructure.migrations import migrate
from tests.conftest import sqlite_settings
from tests.e2e.test_processes import Server, server_env
from tests.helpers import API_KEY, EXAMPLES, new_secret

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_schemathesis_run_finds_nothing(tmp_path):
    settings = sqlite_settings(tmp_path)
    migrate(settings)
    secret = new_secret()
    server = Server(server_env(settings, secret), tmp_path)
    try:
        for path in EXAMPLES:  # something for the reads to find
            server.deliver(json.loads(path.read_text()), secret)
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{server.url}/schema/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {API_KEY}",
                "--max-examples",
                "25",
                "--seed",
                "1",
                # An event stream never ends: tests/e2e/test_change_stream.py tests it.
                "--exclude-operation-id",
                "streamChanges",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,  # its cache of crashes stays out of the project
        )
    finally:
        server.kill()
    assert run.returncode == 0, run.stdout[-4000:]
    assert " passed" in run.stdout
