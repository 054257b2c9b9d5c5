"""Progress of a long command: a redrawn bar with rate and ETA on a terminal, plain lines
(every few seconds) otherwise, so that logs of a scheduled run stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.every_s = every_s
        self.started = time.perf_counter()
        self._last_line = self.started  # the first plain line after `every_s`, not at once
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if self._finished:
            return
        self._finished = done >= total
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        percent = 100.0 * done / total if total else 100.0
        if self.terminal:
            filled = int(percent / 100 * 30)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {percent:5.1f}% {done:,}/{total:,} "
                f"{rate:,.0f}/s ETA {eta:,.0f} s "
            )
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
        elif done >= total or now - self._last_line >= self.every_s:
            self._last_line = now
            print(
                f"{self.label}: {done:,}/{total:,} ({percent:.1f}%), {rate:,.0f}/s, "
                f"ETA {eta:,.0f} s",
                file=self.stream,
                flush=True,
            )
