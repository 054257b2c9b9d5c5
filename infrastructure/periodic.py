"""A background thread of this process that does one thing every few seconds: the access log's
flush, the key ring's reload, the console's tally. It can start again after a stop (an ASGI
host may run an app's lifespan more than once); a failure of its action is the action's own to
handle, so the action must not raise."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    def __init__(self, name: str, interval_s: float, action: Callable[[], object]) -> None:
        self.name, self.interval_s, self.action = name, interval_s, action
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, first: Callable[[], object] | None = None) -> None:
        """Start the thread, unless it runs; `first` runs once in the caller's thread before it
        (a first load that the caller waits for)."""
        with self._guard:
            if self.running:
                return
            if first is not None:
                first()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.action()
