"""The Delivery aggregate: the audit record of one webhook DRx sent, and what became of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import delivery_id

PROCESSED = "processed"
PARKED = "parked"


@dataclass(frozen=True)
class RawDelivery:
    """What arrived: the exact body and the Standard Webhooks headers needed to re-verify it."""

    event_id: str
    drx_type: str
    subject: str
    body: str
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str


class Delivery(Aggregate):
    """Keyed by the envelope `id`, so a second delivery of one event collides on create."""

    @staticmethod
    def create_id(event_id: str, **_: str) -> UUID:
        return delivery_id(event_id)

    @classmethod
    def receive(cls, raw: RawDelivery) -> Delivery:
        return cls(**vars(raw))  # its fields are flat strings: no deep copy needed

    class Received(Aggregate.Created):
        event_id: str
        drx_type: str
        subject: str
        body: str
        webhook_id: str
        webhook_timestamp: str
        webhook_signature: str

    class Processed(Aggregate.Event):
        fact_recorded: bool

    class Parked(Aggregate.Event):
        reason: str

    @event(Received)
    def __init__(
        self,
        *,
        event_id: str,
        drx_type: str,
        subject: str,
        body: str,
        webhook_id: str,
        webhook_timestamp: str,
        webhook_signature: str,
    ) -> None:
        self.event_id = event_id
        self.drx_type = drx_type
        self.subject = subject
        self.body = body
        self.webhook_id = webhook_id
        self.webhook_timestamp = webhook_timestamp
        self.webhook_signature = webhook_signature
        self.status: str | None = None
        self.reason: str | None = None

    @property
    def received_at(self) -> datetime:
        return self.created_on

    @event(Processed)
    def mark_processed(self, fact_recorded: bool) -> None:
        """Applied to its prescription; `fact_recorded` is False when the fact was already there."""
        self.status = PROCESSED
        self.reason = None

    @event(Parked)
    def park(self, reason: str) -> None:
        self.status = PARKED
        self.reason = reason

    @property
    def is_parked(self) -> bool:
        return self.status == PARKED
