"""The stored deliveries (the audit record of what DRx sent), and the replay of parked ones."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from domain.delivery import Delivery as StoredDelivery
from domain.handlers import Outcome
from domain.instants import format_instant
from interfaces import replays
from interfaces.bootstrap import Parts
from interfaces.http.access import PHI, carried
from interfaces.http.auth import BEARER, KEY_REFUSALS, require_operate
from interfaces.http.pagination import DeliveryCursor, delivery_cursor, next_cursor
from interfaces.http.paths import path_id
from interfaces.http.schemas import (
    ConflictingCopy,
    Delivery,
    DeliveryDetail,
    DeliveryPage,
    Problem,
    Replay,
)

NOT_FOUND = {404: ResponseSpec(Problem, description="no delivery with that event id")}


def _listed(item: dict[str, str | None]) -> Delivery:
    received_at = format_instant(datetime.fromisoformat(str(item["received_at"])))
    return Delivery.model_validate({**item, "received_at": received_at})


def _detail(delivery: StoredDelivery) -> DeliveryDetail:
    return DeliveryDetail(
        event_id=delivery.event_id,
        type=delivery.drx_type,
        subject=delivery.subject,
        received_at=format_instant(delivery.received_at),
        status=delivery.shown_status,  # type: ignore[arg-type]
        reason=delivery.reason,
        conflicts=len(delivery.conflicts),
        payload=json.loads(delivery.body),
        raw_body=delivery.body,
        conflicting_copies=[
            ConflictingCopy(received_at=format_instant(copy.received_at), raw_body=copy.body)
            for copy in delivery.conflicts
        ],
    )


class DeliveryController(Controller):
    path = "/deliveries"
    tags = ("deliveries",)
    guards = [require_operate]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @get(
        "/",
        operation_id="listDeliveries",
        summary="Stored deliveries in arrival order, optionally by status",
        sync_to_thread=True,
        responses={
            400: ResponseSpec(Problem, description="a parameter is invalid"),
            **KEY_REFUSALS,
        },
        opt=PHI,
    )
    def list_deliveries(
        self,
        request: Request[Any, Any, Any],
        parts: NamedDependency[Parts],
        status: FromQuery[Literal["processed", "parked", "conflict"] | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: DeliveryCursor = None,
    ) -> DeliveryPage:
        page = parts.queries.deliveries(status, limit, delivery_cursor(cursor))
        answer = carried(request)
        for item in page.items:
            answer.add(item["subject"])
        return DeliveryPage(
            items=[_listed(item) for item in page.items], next_cursor=next_cursor(page.last_key)
        )

    @get(
        "/{event_id:str}",
        operation_id="getDelivery",
        summary="One stored delivery with its raw payload and, when parked, why",
        sync_to_thread=True,
        responses={**KEY_REFUSALS, **NOT_FOUND},
        opt=PHI,
    )
    def get_delivery(
        self,
        request: Request[Any, Any, Any],
        event_id: FromPath[str],
        parts: NamedDependency[Parts],
    ) -> DeliveryDetail:
        detail = _detail(parts.prescriptions.delivery(path_id(event_id)))
        answer = carried(request)
        answer.add(detail.subject)
        answer.add_patients_in(detail.payload)
        for copy in detail.conflicting_copies:
            answer.add_patients_in(json.loads(copy.raw_body))  # stored only when JSON objects
        return detail

    @post(
        "/{event_id:str}/replay",
        operation_id="replayDelivery",
        summary="Process a parked delivery again, with the code deployed now",
        status_code=200,
        sync_to_thread=True,
        responses={
            **KEY_REFUSALS,
            **NOT_FOUND,
            409: ResponseSpec(Problem, description="the delivery is not parked"),
            503: ResponseSpec(Problem, description="the store cannot take it now"),
        },
    )
    def replay(self, event_id: FromPath[str], parts: NamedDependency[Parts]) -> Replay:
        event_id = path_id(event_id)
        receipt = replays.replay(parts, event_id)
        if receipt.outcome is Outcome.ACCEPTED:
            return Replay(status="processed", event_id=event_id, reason=None)
        return Replay(status="parked", event_id=event_id, reason=receipt.reason)
