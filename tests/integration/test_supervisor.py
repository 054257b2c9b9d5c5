"""`drx serve`'s supervisor (interfaces/supervisor.py): a child that keeps ending is started
again after a pause that doubles, and one that ran long enough at once."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

from interfaces import supervisor
from interfaces.supervisor import Child, Supervisor


def _run_for(kept: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kept._keep_running()
        time.sleep(0.02)


def test_a_child_that_keeps_failing_is_restarted_after_a_doubling_pause(caplog):
    child = Child("failing role", [sys.executable, "-c", "raise SystemExit(3)"])
    kept = Supervisor([child])
    child.start()
    pauses: list[float] = []
    deadline = time.monotonic() + 20
    with caplog.at_level(logging.WARNING, logger="drx"):
        while len(pauses) < 3:
            assert time.monotonic() < deadline, pauses
            was = child.due_at
            kept._keep_running()
            if child.due_at and not was:  # seen ended: its pause was chosen
                pauses.append(child.pause_s)
            time.sleep(0.02)
    assert pauses == [0.5, 1.0, 2.0]
    assert "the failing role (pid" in caplog.text
    assert "ended with exit code 3" in caplog.text


def test_a_child_that_ran_steadily_is_started_again_at_once(monkeypatch):
    monkeypatch.setattr(supervisor, "STEADY_S", 0.2)
    child = Child("steady role", [sys.executable, "-c", "import time; time.sleep(0.4)"])
    kept = Supervisor([child])
    child.start()
    first = child.process
    _run_for(kept, 1.5)
    assert child.process is not first, "not started again"
    assert child.pause_s == 0.0
    child.process.kill()  # type: ignore[union-attr]
    child.process.wait()  # type: ignore[union-attr]


def test_a_killed_servers_metrics_directory_is_removed_at_the_next_start(tmp_path, monkeypatch):
    """`drx serve` killed outright cannot remove its metrics directory; the next start removes
    those whose lock no process holds, and leaves a running server's (its lock held, whatever
    its pid says) and anything without a lock file alone."""
    import fcntl
    import os

    from interfaces import server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(supervisor.METRICS_DIR, "")  # so that the test's change is undone
    monkeypatch.delenv(supervisor.METRICS_DIR)
    abandoned = tmp_path / "drx-metrics-4242-abc123"
    running = tmp_path / "drx-metrics-4242-def456"  # the same pid: another namespace's, say
    older = tmp_path / "drx-metrics-x1y2z3"  # no lock file: an older version's
    for folder in (abandoned, running, older):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")
    for folder in (abandoned, running):
        (folder / server.METRICS_LOCK).touch()
    (tmp_path / "drx-metrics-file").write_bytes(b"")  # not a directory: left alone
    held = os.open(running / server.METRICS_LOCK, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        made = server.metrics_directory()
    finally:
        os.close(held)
    assert not abandoned.exists()
    assert running.exists()
    assert older.exists()
    assert (tmp_path / "drx-metrics-file").exists()
    assert made.startswith(str(tmp_path / f"drx-metrics-{os.getpid()}-"))
    assert os.environ[supervisor.METRICS_DIR] == made
    # and the new one is locked as long as this process lives: the next start keeps it
    server._remove_abandoned_metrics()
    assert Path(made).exists()
