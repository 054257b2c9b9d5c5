"""Operations endpoints: liveness, readiness, Prometheus metrics, and projection positions."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from infrastructure import dead_letters
from infrastructure.migrations import pending
from interfaces.bootstrap import Parts
from interfaces.http.auth import BEARER, KEY_REFUSALS, require_operate
from interfaces.http.errors import STORE_UNAVAILABLE, ProblemError, problem
from interfaces.http.metrics import CONTENT_TYPE, WebhookMetrics
from interfaces.http.paths import path_id
from interfaces.http.schemas import DeadLetter, DeadLetterRetry, Problem, ProjectionState

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
    def ready(self, parts: NamedDependency[Parts]) -> Response[dict[str, Any]]:
        if parts.committer.store_recently_failed:
            return problem(503, "store_unavailable", "the event store failed a moment ago")
        try:
            todo = pending(parts.settings)
        except STORE_UNAVAILABLE as exc:
            log.warning("not ready: store unreachable (%s)", type(exc).__name__)
            return problem(503, "store_unavailable", "the event store cannot be reached")
        if todo:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
            return problem(503, "not_migrated", f"pending migrations: {names}; run drx migrate")
        try:
            dead = dead_letters.counts(parts.read_db)
        except STORE_UNAVAILABLE:
            dead = {}
        if dead:
            # Ready to take deliveries, but some read model lacks events: say so, with a 200.
            listed = ", ".join(f"{name} {count}" for name, count in sorted(dead.items()))
            return Response(
                {
                    "status": "degraded",
                    "detail": f"events set aside by the projections ({listed}): see "
                    "GET /projections/{name}/dead-letters, retry once fixed",
                    "dead_letters": dead,
                },
                status_code=200,
            )
        return Response({"status": "ready"}, status_code=200)

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus text format",
        media_type=CONTENT_TYPE,
        sync_to_thread=True,
    )
    def metrics(
        self, parts: NamedDependency[Parts], metrics: NamedDependency[WebhookMetrics]
    ) -> bytes:
        try:
            statuses = parts.projector.status()
            waiting: dict[str, int] | None = parts.queries.waiting_counts()
        except STORE_UNAVAILABLE:
            statuses, waiting = [], None  # the webhook's own figures are still worth a scrape
        return metrics.render(waiting, statuses)


class ProjectionController(Controller):
    tags = ("operations",)
    guards = [require_operate]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @get(
        "/projections",
        operation_id="listProjections",
        summary="Each projection's position, the head of the event store, and the lag",
        sync_to_thread=True,
        responses=KEY_REFUSALS,
    )
    def projections(self, parts: NamedDependency[Parts]) -> list[ProjectionState]:
        return [
            ProjectionState(
                name=s.name,
                position=s.position,
                head=s.head,
                lag=s.lag,
                dead_letters=s.dead_letters,
            )
            for s in parts.projector.status()
        ]

    @get(
        "/projections/{name:str}/dead-letters",
        operation_id="listDeadLetters",
        summary="The events a projection set aside, with why",
        sync_to_thread=True,
        responses={
            **KEY_REFUSALS,
            404: ResponseSpec(Problem, description="no projection of that name"),
        },
    )
    def dead_letters(self, name: FromPath[str], parts: NamedDependency[Parts]) -> list[DeadLetter]:
        _known(parts, name)
        return [
            DeadLetter(
                position=letter.position,
                aggregate_id=str(letter.originator_id),
                aggregate_version=letter.originator_version,
                topic=letter.topic,
                reason=letter.reason,
                held=letter.held,
                attempts=letter.attempts,
                failed_at=letter.failed_at,
            )
            for letter in dead_letters.dead_letters(parts.read_db, name)
        ]

    @post(
        "/projections/{name:str}/dead-letters/retry",
        operation_id="retryDeadLetters",
        summary="Apply a projection's dead letters again (after a fix), in their order",
        status_code=200,
        sync_to_thread=True,
        responses={
            **KEY_REFUSALS,
            404: ResponseSpec(Problem, description="no projection of that name"),
        },
    )
    def retry_dead_letters(
        self, name: FromPath[str], parts: NamedDependency[Parts]
    ) -> DeadLetterRetry:
        _known(parts, name)
        (result,) = parts.projector.retry_dead_letters(name)
        return DeadLetterRetry(name=name, applied=result.applied, still_dead=result.still_dead)


def _known(parts: Parts, name: str) -> None:
    if path_id(name) not in {m.name for m in parts.projector.models}:
        raise ProblemError(404, "projection_not_found", f"no projection named {name}")
