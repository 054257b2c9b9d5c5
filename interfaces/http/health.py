"""Liveness and readiness probes."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from infrastructure.migrations import pending
from interfaces.http.errors import STORE_UNAVAILABLE, problem
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
    )
    def ready(self, services: NamedDependency[Services]) -> Response[dict[str, Any]]:
        try:
            todo = pending(services.settings)
        except STORE_UNAVAILABLE as exc:
            log.warning("not ready: store unreachable (%s)", type(exc).__name__)
            return problem(503, "store_unavailable", "the event store cannot be reached")
        if todo:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
            return problem(503, "not_migrated", f"pending migrations: {names}; run drx migrate")
        return Response({"status": "ready"}, status_code=200)
