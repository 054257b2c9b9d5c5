"""The projections, and the subscriptions' dispatcher, each in a process of its own beside the
web workers of `drx serve`.

Python runs one thread at a time per process: projecting in a web process takes its time from
answering webhooks. So `drx serve`'s supervisor (`interfaces/supervisor.py`) starts the
projector's process once, whatever the number of web workers (`python -m
interfaces.projector_process projector`), and the web workers only read the read models. It
polls the event store every 50 ms when idle (no wake-up crosses processes), runs at a lower CPU
priority than the web workers, keeps the projections' leadership (one leader per database, so a
second `drx serve` on the same database waits as a standby), and ends with its parent. The
dispatcher's process (`... dispatcher`) is alike: its own lead on the database, its own GIL and
CPU turns.

Why not both roles in one process (about 55 MiB less, tried on 2026-12-01): measured alternated
in the same hour (bench/RESULTS.md, the change feed), the subscriptions took twice as long to
catch up with a burst (19.1 s against 8.7), the dispatcher waiting for the projector's turns of
the GIL.
`drx projections run` runs the projections alone in the foreground, for a deployment that puts
the web workers somewhere else.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from infrastructure.dev_credentials import with_credentials
from infrastructure.settings import Settings
from interfaces.bootstrap import StoreNotReadyError, bootstrap
from interfaces.logs import configure_logging
from interfaces.runtime import tune_for_serving

log = logging.getLogger(__name__)

PROJECTOR, DISPATCHER = "projector", "dispatcher"
POLL_INTERVAL_S = 0.05
# How long a process that found no store at its start waits before it tries again (doubling).
START_RETRY_S, MAX_START_RETRY_S = 0.25, 2.0
# Beside the web workers (`drx serve`), the projector and the dispatcher yield the CPU to them:
# an answer to DRx waits for nothing but its own commit, while the read models and the
# subscriptions are eventually consistent anyway. Under a sustained burst that saturates the
# machine their lag grows, and is made up once the burst is over (`GET /projections`, `GET
# /subscriptions` show it). Measured (bench/changes.py, bench/RESULTS.md): at nice 0 the
# dispatcher took half the webhook's flat-out rate with 10 subscriptions listening.
NICENESS = {PROJECTOR: 10, DISPATCHER: 10}


def run(settings: Settings, *, with_parent: bool = False, role: str = PROJECTOR) -> None:
    """Project (or dispatch) until SIGTERM or SIGINT (or, `with_parent`, until the parent
    process is gone)."""
    configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    if with_parent:
        os.nice(NICENESS[role])

    def ended() -> bool:
        if with_parent and os.getppid() != parent:
            log.info("the serving process is gone; the %s stops", role)
            return True
        return False

    wait_s = START_RETRY_S
    while not stop.is_set():
        try:
            with bootstrap(settings, poll_interval_s=POLL_INTERVAL_S) as parts:
                # Built before the freeze: building it imports its modules (bootstrap.py).
                part = parts.projector if role == PROJECTOR else parts.dispatcher
                tune_for_serving()
                part.start()
                log.info("%s started on the store in %s", role, settings.describe_database())
                while not stop.wait(1.0) and not ended():
                    pass
                return
        except StoreNotReadyError as error:
            # Away when this process starts (a database restarting, say): it waits for the
            # store instead of ending, and starts once it is back.
            if wait_s == START_RETRY_S:  # said once; tried again every MAX_START_RETRY_S
                log.warning("the %s waits for the store: %s", role, error)
            if stop.wait(wait_s) or ended():
                return
            wait_s = min(wait_s * 2, MAX_START_RETRY_S)


def main(argv: list[str]) -> None:
    """`python -m interfaces.projector_process ROLE`, as `drx serve`'s supervisor starts it:
    the settings from the environment, the development credentials (SQLite only) from the file
    `drx serve` wrote before starting it."""
    if len(argv) != 1 or argv[0] not in NICENESS:
        raise SystemExit(f"the role is one of {', '.join(NICENESS)}, not {argv!r}")
    settings, _ = with_credentials(Settings.from_env())
    run(settings, with_parent=True, role=argv[0])


if __name__ == "__main__":
    from interfaces.projector_process import main as role_main  # logging under its own name

    role_main(sys.argv[1:])
