"""Prometheus metrics in the text exposition format, without a client library.

Counters and the latency histogram are this process's; the parked count and projection lag are
read from the database at scrape time, so they are the same whichever worker answers.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from infrastructure.projector import ProjectionStatus

LATENCY_BUCKETS_S = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOME_KEY = "drx_outcome"


class WebhookMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
        self.bucket_counts = [0] * len(LATENCY_BUCKETS_S)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            index = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
            if index < len(self.bucket_counts):
                self.bucket_counts[index] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def render(
        self, waiting: dict[str, int] | None, projections: Iterable[ProjectionStatus]
    ) -> str:
        with self._lock:
            outcomes = dict(self.outcomes)
            buckets, total, count = list(self.bucket_counts), self.latency_sum, self.latency_count
        lines = [
            "# HELP drx_webhook_deliveries_total Webhook requests by outcome: accepted, duplicate,"
            " parked, or the error code of a refusal.",
            "# TYPE drx_webhook_deliveries_total counter",
        ]
        lines += [
            f'drx_webhook_deliveries_total{{outcome="{outcome}"}} {n}'
            for outcome, n in sorted(outcomes.items())
        ]
        lines += [
            "# HELP drx_webhook_latency_seconds Time from request to answer on the webhook.",
            "# TYPE drx_webhook_latency_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip(LATENCY_BUCKETS_S, buckets, strict=True):
            cumulative += n
            lines.append(f'drx_webhook_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines += [
            f'drx_webhook_latency_seconds_bucket{{le="+Inf"}} {count}',
            f"drx_webhook_latency_seconds_sum {total:.6f}",
            f"drx_webhook_latency_seconds_count {count}",
            "# HELP drx_projection_lag_events Events in the store not yet in a read model.",
            "# TYPE drx_projection_lag_events gauge",
        ]
        projections = list(projections)
        lines += [
            f'drx_projection_lag_events{{projection="{p.name}"}} {p.lag}' for p in projections
        ]
        lines += [
            "# HELP drx_projection_dead_letters Events a projection set aside (GET /projections).",
            "# TYPE drx_projection_dead_letters gauge",
        ]
        lines += [
            f'drx_projection_dead_letters{{projection="{p.name}"}} {p.dead_letters}'
            for p in projections
        ]
        if waiting is not None:
            lines += [
                "# HELP drx_deliveries_parked Stored deliveries waiting to be replayed.",
                "# TYPE drx_deliveries_parked gauge",
                f"drx_deliveries_parked {waiting['parked']}",
                "# HELP drx_deliveries_conflicting Processed deliveries whose id came again with"
                " another body (kept, flagged: GET /deliveries?status=conflict).",
                "# TYPE drx_deliveries_conflicting gauge",
                f"drx_deliveries_conflicting {waiting['conflict']}",
            ]
        return "\n".join(lines) + "\n"


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def webhook_timing(metrics: WebhookMetrics, path: str) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware timing each request to `path`, labelled by the outcome the handler or the
    error handler left in the scope's state (or the status code when neither did)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def timed(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != path:
                await app(scope, receive, send)
                return
            started, status = time.perf_counter(), [0]

            async def capture(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status[0] = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                outcome = scope.setdefault("state", {}).get(OUTCOME_KEY) or f"http_{status[0]}"
                metrics.observe(str(outcome), time.perf_counter() - started)

        return timed

    return middleware
