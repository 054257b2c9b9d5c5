"""POST /webhooks/drx: verify, parse, store with its effect, and only then answer.

The handler runs on the event loop: checking and translating a delivery takes tens of
microseconds, and storing it is handed to the group committer (a thread of its own), whose
answer is awaited. So no worker thread is held per request while its batch commits; only the
rare park and replay paths run in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from litestar import Controller, Request, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import RawBody
from litestar.response.base import ASGIResponse

from domain.commands import ParkDelivery, RecordDelivery
from domain.errors import describe_fault
from domain.handlers import Outcome, Receipt
from interfaces.bootstrap import Parts
from interfaces.drx.signature import SignatureVerifier
from interfaces.drx.translator import parse_envelope, raw_delivery, translate
from interfaces.http.errors import ProblemError
from interfaces.http.metrics import OUTCOME_KEY
from interfaces.http.schemas import Problem, WebhookAnswer

MAX_BODY_BYTES = 1024 * 1024
PATH = "/webhooks/drx"
# The store's error on the fast path (interfaces/http/fast_webhook.py), for the handler to raise.
STORE_FAILED = "drx.store_failed"


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def read_command(
    body: bytes, headers: Mapping[str, str], verifier: SignatureVerifier
) -> RecordDelivery | ParkDelivery:
    """Everything before the store: authentic (401), JSON (415, 400), an envelope (422), then
    the command; a fault in our translator makes it a parked delivery, never a lost one."""
    signed = verifier.verify(body, headers)
    if not _is_json(headers.get("content-type")):
        raise ProblemError(415, "unsupported_media_type", "Content-Type must be application/json")
    envelope = parse_envelope(body)
    try:
        return translate(envelope, body, signed)
    except Exception as exc:
        return ParkDelivery(raw_delivery(envelope, body, signed), describe_fault(exc), fault=True)


async def store(parts: Parts, command: RecordDelivery | ParkDelivery) -> Receipt:
    """A delivery the translator read, group-committed; one it could not read is parked, in a
    worker thread (the application's calls block). Where this process runs the projections
    (`create_app`'s default, the tests), they follow at once; beside `drx serve`'s projector
    process the wake-up reaches nobody, and its poll finds the delivery."""
    if isinstance(command, RecordDelivery):
        receipt = await parts.committer.submit_async(command)
    else:
        receipt = await anyio.to_thread.run_sync(parts.intake.take, command)
    parts.projector.wake()
    return receipt


def _problem(description: str, example: dict[str, Any] | None = None) -> ResponseSpec:
    examples = [Example(value=example)] if example else None
    return ResponseSpec(Problem, description=description, examples=examples)


# A DRx event as it arrives (contract section 2): what the API page shows to try the webhook.
EXAMPLE_EVENT: dict[str, Any] = {
    "id": "evt_01JDRX0000000000000000007A",
    "type": "drx.prescription.shipped",
    "schema_version": "1.0",
    "source": "drx:h2h/account/acct_demo_001",
    "occurred_at": "2025-03-06T18:40:00Z",
    "sent_at": "2025-03-06T18:40:01Z",
    "attempt": 1,
    "subject": "drx_rx_7Q2M9K",
    "sequence": 7,
    "correlation": {"prescription_id": "drx_rx_7Q2M9K", "pharmacy_rx_number": "RX-88812"},
    "data": {
        "fill_number": 1,
        "carrier": "USPS",
        "tracking_number": "9400000000000000000000",
        "shipped_at": "2025-03-06T18:35:12Z",
    },
}


@dataclass
class WebhookOperation(Operation):
    """The webhook's request body, described: the handler takes the raw bytes (the signature is
    over them), so the framework cannot infer it."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "one DRx event (contract section 2), signed with the webhook-id, "
                "webhook-timestamp and webhook-signature headers (Standard Webhooks)"
            ),
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.OBJECT), example=EXAMPLE_EVENT
                )
            },
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
        operation_class=WebhookOperation,
        request_max_body_size=MAX_BODY_BYTES,
        responses={
            202: ResponseSpec(
                WebhookAnswer,
                description=(
                    "stored before this answer: its fact recorded on the prescription, or, when "
                    "it cannot be applied, kept parked with the reason (`parked: true`), to be "
                    "replayed"
                ),
                examples=[
                    Example(
                        summary="applied",
                        value={"status": "accepted", "event_id": EXAMPLE_EVENT["id"]},
                    ),
                    Example(
                        summary="parked",
                        value={
                            "status": "accepted",
                            "event_id": EXAMPLE_EVENT["id"],
                            "parked": True,
                            "reason": "unknown type 'drx.prescription.teleported'",
                        },
                    ),
                ],
            ),
            200: ResponseSpec(
                WebhookAnswer,
                description=(
                    "an event id already stored; `conflict: true` when this body differs from "
                    "the stored one (kept and flagged: GET /deliveries?status=conflict)"
                ),
                examples=[
                    Example(
                        summary="a retry",
                        value={"status": "duplicate", "event_id": EXAMPLE_EVENT["id"]},
                    ),
                    Example(
                        summary="another body for a stored id",
                        value={
                            "status": "duplicate",
                            "event_id": EXAMPLE_EVENT["id"],
                            "conflict": True,
                        },
                    ),
                ],
            ),
            400: _problem("the body is not a JSON object"),
            401: _problem(
                "signature or timestamp missing, malformed, wrong or out of tolerance",
                {
                    "error": "invalid_signature",
                    "detail": "no signature matches a configured secret",
                },
            ),
            413: _problem("the body is over 1 MiB"),
            415: _problem("the body is not declared application/json"),
            422: _problem("the envelope (contract section 2) is broken"),
            503: _problem("the store cannot take it now; retry after Retry-After seconds"),
        },
    )
    async def receive(self, request: Request[Any, Any, Any], body: RawBody) -> ASGIResponse:
        # The parts from the app's state and the answer as bytes: the framework's dependency
        # resolution and response rendering were a third of its cost on this, its busiest path.
        parts: Parts = request.app.state.parts
        failed = request.scope.get("state", {}).pop(STORE_FAILED, None)
        if failed is not None:  # the fast path's store failed: not tried twice
            raise failed
        command = read_command(body, request.headers, parts.verifier)
        receipt = await store(parts, command)
        request.scope.setdefault("state", {})[OUTCOME_KEY] = receipt.outcome.value
        status, answer = answer_of(receipt)
        return ASGIResponse(body=answer, status_code=status, media_type="application/json")


def answer_of(receipt: Receipt) -> tuple[int, bytes]:
    """The status and body answering a stored delivery (also the fast path's)."""
    if receipt.outcome in (Outcome.DUPLICATE, Outcome.CONFLICT):
        answer = WebhookAnswer(
            status="duplicate",
            event_id=receipt.event_id,
            conflict=True if receipt.outcome is Outcome.CONFLICT else None,
        )
        return 200, answer.model_dump_json(exclude_none=True).encode()
    parked = receipt.outcome is Outcome.PARKED
    answer = WebhookAnswer(
        status="accepted",
        event_id=receipt.event_id,
        parked=True if parked else None,
        reason=receipt.reason if parked else None,
    )
    return 202, answer.model_dump_json(exclude_none=True).encode()
