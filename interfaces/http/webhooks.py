"""POST /webhooks/drx: verify, parse, store with its effect, and only then answer."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import RawBody

from domain.commands import ParkDelivery
from domain.service import Outcome, describe_fault
from interfaces.drx.translator import parse_envelope, raw_delivery, translate
from interfaces.http.errors import ProblemError
from interfaces.http.services import Services

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class WebhookController(Controller):
    path = "/webhooks"
    tags = ("webhooks",)

    @post(
        "/drx",
        operation_id="receiveDrxDelivery",
        summary="Receive one signed DRx event",
        description=(
            "Standard Webhooks signature on the raw body. 202 once the delivery is durably "
            "stored (applied, or parked with its reason when it cannot be applied); 200 for an "
            "envelope id already stored; 503 with Retry-After when the store cannot take it."
        ),
        status_code=202,
        sync_to_thread=True,
        request_max_body_size=MAX_BODY_BYTES,
    )
    def receive(
        self, request: Request[Any, Any, Any], body: RawBody, services: NamedDependency[Services]
    ) -> Response[dict[str, Any]]:
        signed = services.verifier.verify(body, request.headers)
        if not _is_json(request.headers.get("content-type")):
            raise ProblemError(
                415, "unsupported_media_type", "Content-Type must be application/json"
            )
        envelope = parse_envelope(body)
        try:
            command = translate(envelope, body, signed)
        except Exception as exc:  # a fault in our translator parks the delivery, never loses it
            reason = describe_fault(exc)
            log.error("delivery %s parked: %s", envelope.id, reason)
            command = ParkDelivery(raw_delivery(envelope, body, signed), reason)
        receipt = services.handle(command)
        answer: dict[str, Any] = {"status": "accepted", "event_id": receipt.event_id}
        if receipt.outcome is Outcome.DUPLICATE:
            return Response({"status": "duplicate", "event_id": receipt.event_id}, status_code=200)
        if receipt.outcome is Outcome.PARKED:
            answer.update(parked=True, reason=receipt.reason)
            log.warning("delivery %s parked: %s", receipt.event_id, receipt.reason)
        return Response(answer, status_code=202)
