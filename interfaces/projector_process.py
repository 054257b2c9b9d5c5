"""The projections in a process of their own, beside the web workers of `drx serve`.

Python runs one thread at a time per process: projecting in a web process takes its time from
answering webhooks. So `drx serve` starts this process once, whatever the number of web workers,
and the web workers only read the read models. It polls the event store every 50 ms when idle
(no wake-up crosses processes), runs at a lower CPU priority than the web workers, keeps the
projections' leadership (one leader per database, so a second `drx serve` on the same database
waits as a standby), and ends with its parent.
`drx projections run` runs the same loop in the foreground, for a deployment that puts the web
workers somewhere else.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess

from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap
from interfaces.logs import configure_logging
from interfaces.runtime import tune_for_serving

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
# Beside the web workers (`drx serve`), the projector yields the CPU to them: an answer to DRx
# waits for nothing but its own commit, while the read models are eventually consistent anyway.
# Under a sustained burst that saturates the machine the projections' lag grows, and is made up
# once the burst is over (`GET /projections` shows it).
NICENESS = 10


def run(settings: Settings, *, with_parent: bool = False) -> None:
    """Project until SIGTERM or SIGINT (or, `with_parent`, until the parent process is gone)."""
    configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    if with_parent:
        os.nice(NICENESS)
    with bootstrap(settings, poll_interval_s=POLL_INTERVAL_S) as parts:
        tune_for_serving()
        parts.projector.start()
        parts.dispatcher.start()
        log.info("projector started on the store in %s", settings.describe_database())
        while not stop.wait(1.0):
            if with_parent and os.getppid() != parent:
                log.info("the serving process is gone; the projector stops")
                break


def start(settings: Settings) -> BaseProcess:
    """The projector as a child process (spawned: nothing of this process's state is shared)."""
    process = multiprocessing.get_context("spawn").Process(
        target=run, args=(settings,), kwargs={"with_parent": True}, name="drx-projector"
    )
    process.start()
    return process


def stop(process: BaseProcess, timeout_s: float = 10) -> None:
    process.terminate()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
