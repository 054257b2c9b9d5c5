"""`drx projections run`, the projector process `drx serve` starts: it follows the store, and
stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from domain.commands import RecordDelivery
from infrastructure.database import open_read_database
from infrastructure.projector import read_position
from tests.helpers import LIFECYCLES, command_for, load_lifecycle

ROOT = Path(__file__).resolve().parents[2]


def test_the_projector_follows_the_store_and_stops_on_sigterm(settings, prescriptions, intake):
    commands = [command_for(e) for e in load_lifecycle(LIFECYCLES[0])["events"]]
    assert all(isinstance(c, RecordDelivery) for c in commands)
    intake.take_batch(commands)  # type: ignore[arg-type]
    head = prescriptions.recorder.max_notification_id()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DRX_DATABASE_URL": settings.database_url,
        "DRX_POSTGRES_SCHEMA": settings.postgres_schema,
    }
    projector = subprocess.Popen(
        [sys.executable, "-m", "interfaces.cli", "projections", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = open_read_database(settings)
    try:
        deadline = time.monotonic() + 30
        while read_position(db, "prescriptions") < head or read_position(db, "deliveries") < head:
            assert time.monotonic() < deadline, "the projector did not catch up"
            assert projector.poll() is None, projector.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.05)
        rows = db.query("SELECT prescription_id FROM rx_prescriptions")
        assert [r[0] for r in rows] == [commands[0].delivery.subject]
    finally:
        db.close()
        projector.send_signal(signal.SIGTERM)
        assert projector.wait(timeout=15) == 0
