"""The database goes away under constant load and comes back: the webhook answers 202 again
within seconds, the read models catch up, and nothing acknowledged is lost or stored twice.

On a private PostgreSQL cluster started by the test (initdb and pg_ctl on a free port), so that
stopping it disturbs nothing else; `drx serve` runs in its own processes. The full scenarios,
with a 60 s outage, are `python bench/faults.py pg-restart-under-load`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bench import pgcluster
from bench.common import ServeProcess
from bench.faults import ConstantLoad, count_lost_and_doubled
from domain.handlers import Outcome
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap
from interfaces.supervisor import role_command
from tests.helpers import API_KEY, deliver, load_example, new_secret

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres

# The bar: a 202 within 5 s of PostgreSQL accepting connections again.
RECOVERY_S = 5.0


@pytest.fixture
def cluster(private_postgres):
    return private_postgres


@pytest.fixture
def service(cluster, request, tmp_path):
    url = cluster.create_database(f"drx_{request.node.name[-20:].strip('[]_')}_{os.getpid()}")
    migrate(Settings(database_url=url))
    secret = new_secret()
    port = pgcluster.free_port()
    env = {"DRX_DATABASE_URL": url, "DRX_WEBHOOK_SECRETS": secret, "DRX_API_KEYS": API_KEY}
    # Killed outright below: its metrics directory stays, in the test's own directory.
    server = ServeProcess({**env, "TMPDIR": str(tmp_path)}, port)
    server.start()
    try:
        yield url, port, secret
    finally:
        server.kill()


def projections_caught_up(port: int, timeout_s: float) -> bool:
    import http.client
    import json

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/projections", headers={"Authorization": f"Bearer {API_KEY}"})
            response = conn.getresponse()
            rows = json.loads(response.read())
            if response.status == 200 and rows and all(row["lag"] == 0 for row in rows):
                return True
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("mode", ["immediate", "fast", "terminate"])
def test_the_webhook_and_the_projector_recover_within_seconds_under_constant_load(
    cluster, service, mode
):
    url, port, secret = service
    with ConstantLoad(port, secret, senders=4) as load:
        time.sleep(1.5)
        if mode == "terminate":
            assert cluster.terminate_backends(url.rsplit("/", 1)[1]) > 0
        else:
            cluster.stop(mode)
            time.sleep(2)
            cluster.start()
        back = time.monotonic()
        first = load.first_after(back, 202, timeout_s=20)
        assert first is not None, "no 202 within 20 s of the database being back"
        assert first < RECOVERY_S
        time.sleep(1)
    # The projector resumed: once the senders stop, the read models catch up with the store.
    assert projections_caught_up(port, timeout_s=15)
    assert count_lost_and_doubled(url, load.acknowledged) == 0
    assert len(load.acknowledged) > 100


def test_a_projector_started_while_the_database_is_away_waits_and_starts_once_it_is_back(cluster):
    """Found when its start grew slower than the database's stop in the test above: a projector
    (or dispatcher) process that found no store at its start ended, and nothing restarted it."""
    url = cluster.create_database(f"drx_away_at_start_{os.getpid()}")
    settings = Settings(database_url=url, webhook_secrets=(new_secret(),), api_keys=(API_KEY,))
    migrate(settings)
    with bootstrap(settings) as parts:
        assert deliver(parts.prescriptions, load_example("received")) is Outcome.ACCEPTED
    cluster.stop("fast")
    back = False
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DRX_DATABASE_URL": url,
        "DRX_WEBHOOK_SECRETS": settings.webhook_secrets[0],
        "DRX_API_KEYS": API_KEY,
    }
    process = subprocess.Popen(role_command("projector"), env=env)  # as drx serve starts it
    try:
        time.sleep(2)
        assert process.poll() is None, "the projector's process ended while the store was away"
        cluster.start()
        back = True
        deadline = time.monotonic() + 15
        while True:
            with bootstrap(settings) as parts:
                if all(s.lag == 0 for s in parts.projector.status()):
                    break
            assert time.monotonic() < deadline, (
                "the projector did not start once the store was back"
            )
            time.sleep(0.2)
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
        if not back:  # the session's other tests need the cluster
            cluster.start()
