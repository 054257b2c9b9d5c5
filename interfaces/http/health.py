"""Operations endpoints: liveness, readiness, Prometheus metrics, and projection positions."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from infrastructure.migrations import pending
from interfaces.http.auth import BEARER, require_api_key
from interfaces.http.errors import STORE_UNAVAILABLE, problem
from interfaces.http.schemas import Problem, ProjectionState
from interfaces.http.services import Services

log = logging.getLogger(__name__)


class HealthController(Controller):
    tags = ("operations",)

    @get(
        "/health", operation_id="health", summary="200 while the process runs", sync_to_thread=False
    )
    def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        operation_id="ready",
        summary="200 when the store is reachable and migrated, else 503",
        sync_to_thread=True,
        responses={503: ResponseSpec(Problem, description="store unreachable or not migrated")},
    )
    def ready(self, services: NamedDependency[Services]) -> Response[dict[str, Any]]:
        if services.committer.store_recently_failed:
            return problem(503, "store_unavailable", "the event store failed a moment ago")
        try:
            todo = pending(services.settings)
        except STORE_UNAVAILABLE as exc:
            log.warning("not ready: store unreachable (%s)", type(exc).__name__)
            return problem(503, "store_unavailable", "the event store cannot be reached")
        if todo:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
            return problem(503, "not_migrated", f"pending migrations: {names}; run drx migrate")
        return Response({"status": "ready"}, status_code=200)

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus text format",
        media_type="text/plain; version=0.0.4",
        sync_to_thread=True,
    )
    def metrics(self, services: NamedDependency[Services]) -> str:
        try:
            lags = [(s.name, s.lag) for s in services.projections.status()]
            parked: int | None = services.read_model.parked_count()
        except STORE_UNAVAILABLE:
            lags, parked = [], None  # the webhook's own figures are still worth a scrape
        return services.metrics.render(parked, lags)


class ProjectionController(Controller):
    tags = ("operations",)
    guards = [require_api_key]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @get(
        "/projections",
        operation_id="listProjections",
        summary="Each projection's position, the head of the event store, and the lag",
        sync_to_thread=True,
        responses={401: ResponseSpec(Problem, description="no valid API key")},
    )
    def projections(self, services: NamedDependency[Services]) -> list[ProjectionState]:
        return [
            ProjectionState(name=s.name, position=s.position, head=s.head, lag=s.lag)
            for s in services.projections.status()
        ]
