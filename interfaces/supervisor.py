"""`drx serve` once it serves: it starts the service's processes, keeps them running, and stops
them; nothing else.

`drx serve` migrates, checks the store and takes the port (`interfaces/server.py`), then this
module replaces it (`os.execv`: the same process id, for a service manager or a shell's job
control), so that the process that lives as long as the service holds only the standard library:
about 14 MiB, against the 70 MB of a process that has imported the service (which Python cannot
unload). It starts, as plain child processes (no `multiprocessing`, whose resource tracker
would be one process more):

- the projector and the subscriptions' dispatcher, each in a process of its own (`python -m
  interfaces.projector_process ROLE`), at a lower CPU priority;
- `--workers` web workers (`python -m interfaces.web_worker FD`), all on the one listening
  socket it passes down.

A child that ends while the service runs (a crash, an out-of-memory kill) is started again,
after a pause that doubles, from 0.5 s to 30 s, while it keeps ending within a minute of its
start. SIGTERM or SIGINT (Ctrl-C) stops every child with SIGTERM, waits for them (a web worker
finishes its requests in flight), kills any still there after `STOP_TIMEOUT_S`, removes the
metrics directory and exits 0. Each child also ends by itself when this process is gone
(SIGKILL), by watching its parent.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from interfaces.logs import configure_logging

log = logging.getLogger("drx")

PROJECTOR, DISPATCHER, WEB = "projector", "dispatcher", "web worker"
# prometheus_client's variable, for the web workers' figures (interfaces/http/metrics.py): set
# by interfaces/server.py before the exec, before any process has imported the library.
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CHECK_S = 0.2
FIRST_PAUSE_S, MAX_PAUSE_S = 0.5, 30.0
STEADY_S = 60.0  # a child that ran this long before it ended is started again at once
STOP_TIMEOUT_S = 15.0


class Child:
    """One process kept running. (A plain class: `dataclasses` would weigh more than the rest
    of this module's imports.)"""

    def __init__(self, role: str, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        self.role, self.argv, self.pass_fds = role, argv, pass_fds
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = self.pause_s = 0.0
        self.due_at = 0.0  # when it is to be started again, once it has ended

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, pass_fds=self.pass_fds)  # noqa: S603
        self.started_at = time.monotonic()

    def ended(self) -> int | None:
        return None if self.process is None else self.process.poll()


def python() -> list[str]:
    """This interpreter, with its warning options (a test's `-W error::...`)."""
    return [sys.executable, *(f"-W{option}" for option in sys.warnoptions)]


def role_command(role: str) -> list[str]:
    """The projector's process, or the dispatcher's."""
    return [*python(), "-m", "interfaces.projector_process", role]


def children(fd: int, workers: int, host: str, port: int) -> list[Child]:
    web = [*python(), "-m", "interfaces.web_worker", str(fd), host, str(port)]
    return [
        Child(PROJECTOR, role_command("projector")),
        Child(DISPATCHER, role_command("dispatcher")),
    ] + [Child(WEB, web, pass_fds=(fd,)) for _ in range(workers)]


class Supervisor:
    def __init__(self, kept: list[Child]) -> None:
        self.kept = kept
        self.stopping = False

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for child in self.kept:
            child.start()
        while not self.stopping:
            self._keep_running()
            time.sleep(CHECK_S)
        self._stop_all()
        return 0

    def _keep_running(self) -> None:
        now = time.monotonic()
        for child in self.kept:
            code = child.ended()
            if code is None:
                continue
            if child.due_at == 0.0:  # seen ended for the first time
                ran_s = now - child.started_at
                doubled = min(max(child.pause_s * 2, FIRST_PAUSE_S), MAX_PAUSE_S)
                child.pause_s = 0.0 if ran_s >= STEADY_S else doubled
                child.due_at = now + child.pause_s
                log.warning(
                    "the %s (pid %d) ended with exit code %d after %.1f s: started again in %.1f s",
                    child.role,
                    child.process.pid if child.process else 0,
                    code,
                    ran_s,
                    child.pause_s,
                )
            if now >= child.due_at:
                child.due_at = 0.0
                child.start()

    def _stop_all(self) -> None:
        running = [c.process for c in self.kept if c.process is not None and c.ended() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in %.0f s: killed", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.wait()


def command(fd: int, workers: int, host: str, port: int) -> list[str]:
    """How `drx serve` becomes the supervisor (`interfaces/server.py`)."""
    return [*python(), "-m", "interfaces.supervisor", str(fd), str(workers), host, str(port)]


def main(argv: list[str]) -> int:
    """`python -m interfaces.supervisor FD WORKERS HOST PORT`: FD the listening socket."""
    fd, workers, host, port = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    configure_logging()
    try:
        return Supervisor(children(fd, workers, host, port)).run()
    finally:
        os.close(fd)
        figures = os.environ.get(METRICS_DIR)
        if figures:
            shutil.rmtree(figures, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
