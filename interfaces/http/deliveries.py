"""Read endpoints for the stored webhook deliveries: the audit record of what DRx sent."""

from __future__ import annotations

import json
from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from domain.state import format_instant
from interfaces.http.services import Services


class DeliveryController(Controller):
    path = "/deliveries"
    tags = ("deliveries",)

    @get(
        "/{event_id:str}",
        operation_id="getDelivery",
        summary="One stored delivery with its raw payload and, when parked, why",
        sync_to_thread=True,
    )
    def get_delivery(
        self, event_id: FromPath[str], services: NamedDependency[Services]
    ) -> dict[str, Any]:
        delivery = services.prescriptions.delivery(event_id)
        return {
            "event_id": delivery.event_id,
            "type": delivery.drx_type,
            "subject": delivery.subject,
            "received_at": format_instant(delivery.received_at),
            "status": delivery.status,
            "reason": delivery.reason,
            "payload": json.loads(delivery.body),
            "raw_body": delivery.body,
        }
