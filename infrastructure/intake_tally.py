"""The webhook's intake by minute, for the console's chart: how many deliveries were accepted,
duplicates, parked or refused, and the answer times, in each of the last minutes.

Each web worker counts in memory (a dictionary increment per request, under a lock) and adds its
counts to `drx_intake_minutes` every `FLUSH_S`, one upsert per (minute, series) in one
transaction, so every worker and every host on the database adds into the same rows; rows older
than `KEEP_S` are pruned once a minute. A worker killed outright loses its last `FLUSH_S` of
counts; while the database is away, counts wait in memory (a few rows per minute).
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from infrastructure.database import ReadDatabase
from infrastructure.periodic import Periodic

log = logging.getLogger(__name__)

FLUSH_S = 2.0
KEEP_S = 2 * 3600.0
PRUNE_EVERY_S = 60.0
# What the chart shows; a conflict is a duplicate (answered 200 duplicate), any error a refusal.
CATEGORIES = ("accepted", "duplicate", "parked", "refused")
_CATEGORY_OF = {
    "accepted": "accepted",
    "duplicate": "duplicate",
    "conflict": "duplicate",
    "parked": "parked",
}
# The answer times' buckets (upper bounds, seconds), as the Prometheus histogram has them.
BUCKETS_S = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OVER = "le:+Inf"


def category(outcome: str) -> str:
    """The chart's category of a webhook outcome (`accepted`, ..., or an error code)."""
    return _CATEGORY_OF.get(outcome, "refused")


def minute_of(moment: datetime) -> str:
    """The minute an instant falls in, as the table keys it (`2025-03-04T15:22Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


_LABELS = (*(f"le:{bound}" for bound in BUCKETS_S), _OVER)


def _bucket(seconds: float) -> str:
    """The label of the first bucket whose upper bound is at or above `seconds`."""
    return _LABELS[bisect_left(BUCKETS_S, seconds)]


@dataclass(frozen=True)
class Minute:
    minute: str
    counts: dict[str, int]  # by category, each present


@dataclass(frozen=True)
class Intake:
    """The intake over a span: each minute's counts, oldest first, and the answer times."""

    minutes: list[Minute]
    latency_buckets: dict[float, int]  # by upper bound (inf the last): answers in that bucket

    def total(self, name: str) -> int:
        return sum(m.counts[name] for m in self.minutes)

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of the answer times, interpolated within its bucket as Prometheus's
        histogram_quantile does (None without answers; the last finite bound past it)."""
        return quantile(sorted(self.latency_buckets.items()), q)


def quantile(buckets: Sequence[tuple[float, int]], q: float) -> float | None:
    """From (upper bound, count in that bucket) in bound order."""
    total = sum(count for _, count in buckets)
    if total == 0:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for bound, count in buckets:
        if count and seen + count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        if bound != float("inf"):
            lower = bound
    return lower


class IntakeTally:
    """This process's counts (see the module's docstring)."""

    def __init__(
        self,
        db: ReadDatabase,
        flush_s: float = FLUSH_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db, self._now = db, now
        self._counts: Counter[tuple[str, str]] = Counter()
        self._guard = threading.Lock()
        self._writing = threading.Lock()
        self._flusher = Periodic("drx-intake-tally", flush_s, self.flush)
        self._pruned_at = 0.0
        self._failing = False
        self._minute_of: tuple[datetime, str] | None = None  # the last minute counted, named

    def count(self, outcome: str, seconds: float) -> None:
        """Called on every webhook answer: the minute's name is formatted once a minute."""
        start = self._now().replace(second=0, microsecond=0)
        with self._guard:
            if self._minute_of is None or self._minute_of[0] != start:
                self._minute_of = start, minute_of(start)
            minute = self._minute_of[1]
            self._counts[minute, "outcome:" + category(outcome)] += 1
            self._counts[minute, _bucket(seconds)] += 1

    def flush(self) -> None:
        """Add what was counted to the table; on a failure the counts wait for the next one."""
        with self._writing:
            with self._guard:
                counts, self._counts = self._counts, Counter()
            try:
                self._write(counts)
            except Exception as exc:
                with self._guard:
                    self._counts.update(counts)
                if not self._failing:
                    log.warning("the intake counts cannot be written now (%s)", type(exc).__name__)
                self._failing = True
                return
            self._failing = False

    def _write(self, counts: Counter[tuple[str, str]]) -> None:
        prune = time.monotonic() - self._pruned_at >= PRUNE_EVERY_S
        if not counts and not prune:
            return
        with self.db.transaction(durable=False) as cursor:
            for (minute, series), added in sorted(counts.items()):
                cursor.execute(
                    "INSERT INTO drx_intake_minutes (minute, series, count) VALUES (%s, %s, %s)"
                    " ON CONFLICT (minute, series)"
                    " DO UPDATE SET count = drx_intake_minutes.count + excluded.count",
                    (minute, series, added),
                )
            if prune:
                oldest = minute_of(self._now() - timedelta(seconds=KEEP_S))
                cursor.execute("DELETE FROM drx_intake_minutes WHERE minute < %s", (oldest,))
        if prune:
            self._pruned_at = time.monotonic()

    def last_minutes(self, minutes: int) -> Intake:
        """The intake of the last `minutes` minutes, this one included, every minute present
        (as stored: up to FLUSH_S behind)."""
        now = self._now()
        keys = [minute_of(now - timedelta(minutes=back)) for back in range(minutes - 1, -1, -1)]
        rows = self.db.query(
            "SELECT minute, series, count FROM drx_intake_minutes WHERE minute >= %s",
            (keys[0],),
        )
        counts = {key: dict.fromkeys(CATEGORIES, 0) for key in keys}
        latency: Counter[float] = Counter()
        for minute, series, count in rows:
            kind, _, label = str(series).partition(":")
            if kind == "outcome" and minute in counts and label in CATEGORIES:
                counts[minute][label] += int(count)
            elif kind == "le":
                latency[float(label)] += int(count)
        return Intake([Minute(key, counts[key]) for key in keys], dict(latency))

    def start(self) -> None:
        self._flusher.start()

    def stop(self) -> None:
        """Stop the thread and add what was counted (a clean shutdown loses nothing)."""
        self._flusher.stop()
        self.flush()
