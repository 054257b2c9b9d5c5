"""Prometheus metrics, with prometheus_client: one set of figures for the whole service.

The webhook's counters and latency histogram are kept by every web worker in prometheus_client's
multiprocess mode: `drx serve` gives its workers one directory (`PROMETHEUS_MULTIPROC_DIR`, set
before any of them starts) and a scrape, whichever worker answers it, adds up every worker's.
Without that directory (one process, as in the tests) the figures are the process's own. The
store's figures (projection lag, dead letters, parked and conflicting deliveries) are read from
the database at scrape time, so they are the same whichever worker answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infrastructure.intake_tally import BUCKETS_S, IntakeTally
from infrastructure.projector import ProjectionStatus
from interfaces.supervisor import METRICS_DIR

LATENCY_BUCKETS_S = BUCKETS_S  # the console's tally counts the answer times in the same ones
OUTCOME_KEY = "drx_outcome"
STARTED_KEY = "drx_started"  # when the fast path began a request it left to the framework
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Forward(Collector):
    """Collects another registry's metrics (this process's own, outside multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


class _StoreFigures(Collector):
    """What the database says at scrape time."""

    def __init__(
        self, waiting: dict[str, int] | None, projections: Iterable[ProjectionStatus]
    ) -> None:
        self.waiting, self.projections = waiting, list(projections)

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "drx_projection_lag_events",
            "Events in the store not yet in a read model.",
            labels=["projection"],
        )
        dead = GaugeMetricFamily(
            "drx_projection_dead_letters",
            "Events a projection set aside (GET /projections).",
            labels=["projection"],
        )
        for status in self.projections:
            lag.add_metric([status.name], status.lag)
            dead.add_metric([status.name], status.dead_letters)
        yield lag
        yield dead
        if self.waiting is not None:
            yield GaugeMetricFamily(
                "drx_deliveries_parked",
                "Stored deliveries waiting to be replayed.",
                value=self.waiting["parked"],
            )
            yield GaugeMetricFamily(
                "drx_deliveries_conflicting",
                "Processed deliveries whose id came again with another body (kept, flagged: "
                "GET /deliveries?status=conflict).",
                value=self.waiting["conflict"],
            )


class WebhookMetrics:
    """The webhook's figures, of this app (tests build several apps in one process); each is
    also counted by minute in `tally`, for the console, when one is given."""

    def __init__(self, tally: IntakeTally | None = None) -> None:
        self.tally = tally
        self._registry = CollectorRegistry()
        self.deliveries = Counter(
            "drx_webhook_deliveries",
            "Webhook requests by outcome: accepted, duplicate, conflict, parked, or the error "
            "code of a refusal.",
            ["outcome"],
            registry=self._registry,
        )
        self.latency = Histogram(
            "drx_webhook_latency_seconds",
            "Time from request to answer on the webhook.",
            buckets=LATENCY_BUCKETS_S,
            registry=self._registry,
        )
        self._by_outcome: dict[str, Any] = {}

    def observe(self, outcome: str, seconds: float) -> None:
        counter = self._by_outcome.get(outcome)
        if counter is None:  # the library's lookup by label, once per outcome
            counter = self._by_outcome[outcome] = self.deliveries.labels(outcome)
        counter.inc()
        self.latency.observe(seconds)
        if self.tally is not None:
            self.tally.count(outcome, seconds)

    def render(
        self, waiting: dict[str, int] | None, projections: Iterable[ProjectionStatus]
    ) -> bytes:
        registry = CollectorRegistry()
        if os.environ.get(METRICS_DIR):
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry.register(_Forward(self._registry))
        registry.register(_StoreFigures(waiting, projections))
        return generate_latest(registry)


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def status_recorder(send: Any) -> tuple[Any, list[int]]:
    """An ASGI `send` that passes every message on and keeps the response's status (in the
    list it returns beside it: 0 until the response starts)."""
    status = [0]

    async def recording(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = int(message["status"])
        await send(message)

    return recording, status


def webhook_timing(metrics: WebhookMetrics, path: str) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware timing each request to `path`, labelled by the outcome the handler or the
    error handler left in the scope's state (or the status code when neither did)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def timed(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != path:
                await app(scope, receive, send)
                return
            started = scope.get("state", {}).get(STARTED_KEY) or time.perf_counter()
            capture, status = status_recorder(send)
            try:
                await app(scope, receive, capture)
            finally:
                outcome = scope.setdefault("state", {}).get(OUTCOME_KEY) or f"http_{status[0]}"
                metrics.observe(str(outcome), time.perf_counter() - started)

        return timed

    return middleware
