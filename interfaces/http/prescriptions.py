"""Read endpoints for prescriptions: current state, state as of an instant, and the history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from domain.state import format_instant
from interfaces.http.errors import ProblemError
from interfaces.http.services import Services


def parse_instant(name: str, value: str) -> datetime:
    """An RFC 3339 timestamp with its offset, or a 400 that names the parameter."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ProblemError(
            400,
            "invalid_parameter",
            f"{name} must be an RFC 3339 timestamp with an offset, e.g. 2025-03-04T15:22:10Z",
        )
    return moment


class PrescriptionController(Controller):
    path = "/prescriptions"
    tags = ("prescriptions",)

    @get(
        "/{prescription_id:str}",
        operation_id="getPrescription",
        summary="A prescription's current state, or its state as of an instant",
        sync_to_thread=True,
    )
    def get_prescription(
        self,
        prescription_id: FromPath[str],
        services: NamedDependency[Services],
        as_of: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        moment = parse_instant("as_of", as_of) if as_of is not None else None
        return services.prescriptions.state(prescription_id, as_of=moment).as_dict()

    @get(
        "/{prescription_id:str}/history",
        operation_id="getPrescriptionHistory",
        summary="Every recorded fact of a prescription, in recorded order",
        sync_to_thread=True,
    )
    def get_history(
        self, prescription_id: FromPath[str], services: NamedDependency[Services]
    ) -> dict[str, Any]:
        recorded = services.prescriptions.history(prescription_id)
        return {
            "prescription_id": prescription_id,
            "events": [
                {
                    "version": r.number,
                    "type": r.fact.drx_type,
                    "event_id": r.fact.event_id,
                    "occurred_at": format_instant(r.fact.occurred_at),
                    "recorded_at": format_instant(r.recorded_at),
                    "sequence": r.fact.sequence or None,
                    "correlation": dict(r.fact.correlation),
                    "data": dict(r.fact.data),
                }
                for r in recorded
            ],
        }
