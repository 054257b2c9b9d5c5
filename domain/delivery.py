"""The Delivery aggregate: the audit record of one webhook DRx sent, and what became of it.

One Delivery per envelope `id` (contract section 4, rule 2). A second delivery with that id is
one of three things, decided by `Delivery.repeat` with what each body reports (`Report`: the
anti-corruption layer's digest, which leaves out the fields that differ between DRx's attempts
of one event; asked only when an id repeats):
- the same report (a retry: only the attempt's own fields differ): a duplicate, nothing kept;
- another body for a delivery that was parked: a correction, kept and processed as that event;
- another body for one that was processed: a conflict, kept (never silently dropped) and
  flagged, its fact unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import delivery_id

PROCESSED = "processed"
PARKED = "parked"
CONFLICT = "conflict"


def shown_status(outcome: str | None, conflicts: int) -> str | None:
    """The status a delivery is listed with: `conflict` once a processed one's id came again
    with another body (it stays processed: its fact is the first body's)."""
    return CONFLICT if conflicts and outcome == PROCESSED else outcome


# What a delivery's body reports, as a digest: equal for two attempts of one event.
Report = Callable[[str], str]


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


@dataclass(frozen=True)
class ConflictingCopy:
    """A body that repeated the delivery's id with other content, as it arrived."""

    received_at: datetime
    body: str
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str


def _as_signed(source: RawDelivery | Delivery.ConflictReceived) -> dict[str, str]:
    """A body as it was signed: the body and its three Standard Webhooks headers."""
    return {
        "body": source.body,
        "webhook_id": source.webhook_id,
        "webhook_timestamp": source.webhook_timestamp,
        "webhook_signature": source.webhook_signature,
    }


class Repeat(Enum):
    SAME = "same"
    CORRECTION = "correction"
    CONFLICT = "conflict"


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

    class Corrected(Aggregate.Event):
        """A parked delivery's id came again with another body: that body replaces it."""

        drx_type: str
        subject: str
        body: str
        webhook_id: str
        webhook_timestamp: str
        webhook_signature: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Delivery)
            aggregate._take_body(self)
            aggregate.status, aggregate.reason = None, None

    class ConflictReceived(Aggregate.Event):
        """A processed delivery's id came again with another body: kept, the fact unchanged."""

        body: str
        webhook_id: str
        webhook_timestamp: str
        webhook_signature: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Delivery)
            aggregate.conflicts.append(ConflictingCopy(self.timestamp, **_as_signed(self)))
            aggregate._bodies.append(self.body)

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
        self.status: str | None = None
        self.reason: str | None = None
        self.conflicts: list[ConflictingCopy] = []
        self._bodies: list[str] = []  # every body received for this id, in order
        self._take_body(
            RawDelivery(
                event_id, drx_type, subject, body, webhook_id, webhook_timestamp, webhook_signature
            )
        )

    def _take_body(self, raw: RawDelivery | Delivery.Corrected) -> None:
        self.drx_type = raw.drx_type
        self.subject = raw.subject
        self.body = raw.body
        self.webhook_id = raw.webhook_id
        self.webhook_timestamp = raw.webhook_timestamp
        self.webhook_signature = raw.webhook_signature
        self._bodies.append(raw.body)

    @property
    def received_at(self) -> datetime:
        return self.created_on

    def repeat(self, raw: RawDelivery, report: Report) -> Repeat:
        """What a second delivery with this id is (see the module's docstring). A body seen
        before for this id (the first, a correction, a conflicting copy) is the same report."""
        new = report(raw.body)
        if any(report(body) == new for body in self._bodies):
            return Repeat.SAME
        return Repeat.CORRECTION if self.is_parked else Repeat.CONFLICT

    def correct(self, raw: RawDelivery) -> None:
        """Take the corrected body; processing it (or parking it again) follows."""
        fields = vars(raw).copy()
        del fields["event_id"]
        self.trigger_event(Delivery.Corrected, **fields)

    def record_conflict(self, raw: RawDelivery) -> None:
        self.trigger_event(Delivery.ConflictReceived, **_as_signed(raw))

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

    @property
    def shown_status(self) -> str | None:
        return shown_status(self.status, len(self.conflicts))
