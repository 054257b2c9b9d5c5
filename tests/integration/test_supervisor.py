"""`drx serve`'s supervisor (interfaces/supervisor.py): a child that keeps ending is started
again after a pause that doubles, and one that ran long enough at once."""

from __future__ import annotations

import logging
import sys
import time

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
