"""What a fact is: one thing DRx reported about a prescription, and how facts are ordered."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from domain import fact_data

DRX_TYPE_PREFIX = "drx.prescription."


class FactKind(StrEnum):
    """The kinds of fact, named as DRx names them after `drx.prescription.`."""

    RECEIVED = "received"
    SENT = "sent"
    UPDATED = "updated"
    CHANGE_REQUESTED = "change_requested"
    CHANGE_APPROVED = "change_approved"
    CHANGE_DENIED = "change_denied"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    CANCEL_DENIED = "cancel_denied"
    RENEWAL_REQUESTED = "renewal_requested"
    RENEWAL_APPROVED = "renewal_approved"
    RENEWAL_DENIED = "renewal_denied"
    PROCESSING = "processing"
    ON_HOLD = "on_hold"
    DISPENSED = "dispensed"
    READY_FOR_PICKUP = "ready_for_pickup"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    TRANSFERRED = "transferred"
    REJECTED = "rejected"

    @property
    def drx_type(self) -> str:
        return _DRX_TYPES[self]

    @classmethod
    def from_drx_type(cls, drx_type: str) -> FactKind | None:
        """The kind for a DRx `type`, or None when this contract does not know it."""
        if not drx_type.startswith(DRX_TYPE_PREFIX):
            return None
        try:
            return cls(drx_type.removeprefix(DRX_TYPE_PREFIX))
        except ValueError:
            return None


# Each kind's DRx `type`, made once (an enum's `value` is slow to read on every fact folded).
_DRX_TYPES: Mapping[FactKind, str] = {kind: DRX_TYPE_PREFIX + str(kind) for kind in FactKind}

# Contract section 4.3: the rank that breaks ties in `occurred_at`.
TIE_RANK: Mapping[FactKind, int] = {
    FactKind.RECEIVED: 0,
    FactKind.SENT: 1,
    FactKind.UPDATED: 2,
    FactKind.CHANGE_REQUESTED: 2,
    FactKind.CHANGE_APPROVED: 2,
    FactKind.CHANGE_DENIED: 2,
    FactKind.CANCEL_REQUESTED: 2,
    FactKind.CANCEL_DENIED: 2,
    FactKind.RENEWAL_REQUESTED: 2,
    FactKind.RENEWAL_APPROVED: 2,
    FactKind.RENEWAL_DENIED: 2,
    FactKind.PROCESSING: 3,
    FactKind.ON_HOLD: 3,
    FactKind.DISPENSED: 4,
    FactKind.READY_FOR_PICKUP: 5,
    FactKind.SHIPPED: 5,
    FactKind.DELIVERED: 6,
    FactKind.REJECTED: 7,
    FactKind.CANCELLED: 7,
    FactKind.TRANSFERRED: 7,
}

# Contract section 4.3: the eleven facts that drive the status.
STATUS_CHANGING: frozenset[FactKind] = frozenset(
    {
        FactKind.RECEIVED,
        FactKind.SENT,
        FactKind.PROCESSING,
        FactKind.ON_HOLD,
        FactKind.DISPENSED,
        FactKind.READY_FOR_PICKUP,
        FactKind.SHIPPED,
        FactKind.DELIVERED,
        FactKind.CANCELLED,
        FactKind.TRANSFERRED,
        FactKind.REJECTED,
    }
)


DATA_FOR: Mapping[FactKind, type[fact_data.Value]] = {
    FactKind.RECEIVED: fact_data.Received,
    FactKind.SENT: fact_data.Sent,
    FactKind.UPDATED: fact_data.Updated,
    FactKind.CHANGE_REQUESTED: fact_data.ChangeRequested,
    FactKind.CHANGE_APPROVED: fact_data.ChangeApproved,
    FactKind.CHANGE_DENIED: fact_data.Denied,
    FactKind.CANCEL_REQUESTED: fact_data.CancelRequested,
    FactKind.CANCELLED: fact_data.Cancelled,
    FactKind.CANCEL_DENIED: fact_data.Denied,
    FactKind.RENEWAL_REQUESTED: fact_data.RenewalRequested,
    FactKind.RENEWAL_APPROVED: fact_data.RenewalApproved,
    FactKind.RENEWAL_DENIED: fact_data.Denied,
    FactKind.PROCESSING: fact_data.Processing,
    FactKind.ON_HOLD: fact_data.OnHold,
    FactKind.DISPENSED: fact_data.Dispensed,
    FactKind.READY_FOR_PICKUP: fact_data.ReadyForPickup,
    FactKind.SHIPPED: fact_data.Shipped,
    FactKind.DELIVERED: fact_data.Delivered,
    FactKind.TRANSFERRED: fact_data.Transferred,
    FactKind.REJECTED: fact_data.Rejected,
}
assert set(DATA_FOR) == set(FactKind), "every kind of fact needs its data"


def read_data(kind: FactKind, document: Mapping[str, Any] | str) -> fact_data.FactData:
    """A fact's data from its stored document, a mapping or its JSON text (what the document
    does not name is ignored); ValueError when it lacks what the domain reasons with."""
    model = DATA_FOR[kind]
    if isinstance(document, str):
        return model.model_validate_json(document)  # type: ignore[return-value]
    return model.model_validate(document)  # type: ignore[return-value]


@dataclass(frozen=True)
class Fact:
    """One DRx event as the domain sees it: `data` is what it says, typed (`fact_data`).

    `text` is the JSON form (canonical: sorted keys) the fact is stored, hashed and shown in:
    made from `data`, or, for a fact read back from the store (`Fact.read`), the stored one as
    it is; `document` is that text parsed, when asked for.
    """

    event_id: str
    kind: FactKind
    occurred_at: datetime
    sequence: int
    data: fact_data.FactData
    correlation: Mapping[str, Any] = field(default_factory=dict)
    text: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("a fact's occurred_at must carry a UTC offset")
        if not self.text:
            document = fact_data.to_document(self.data)
            object.__setattr__(self, "text", fact_data.canonical_json(document))

    @cached_property
    def document(self) -> Mapping[str, Any]:
        loaded: dict[str, Any] = json.loads(self.text)
        return loaded

    @classmethod
    def read(
        cls,
        event_id: str,
        kind: FactKind,
        occurred_at: datetime,
        sequence: int = 0,
        document: Mapping[str, Any] | str | None = None,
        correlation: Mapping[str, Any] | None = None,
    ) -> Fact:
        """A fact from its document (a stored fact's, in the domain's words), as a mapping or
        as its JSON text (read in one pass, and kept as it is)."""
        text = document if isinstance(document, str) else fact_data.canonical_json(document or {})
        return cls(
            event_id,
            kind,
            occurred_at,
            sequence,
            read_data(kind, text),
            dict(correlation or {}),
            text,
        )

    @property
    def drx_type(self) -> str:
        return self.kind.drx_type

    def order_key(self) -> tuple[datetime, int, int, str]:
        """Contract section 4.1: occurred_at, then sequence, then rank, then id."""
        return (self.occurred_at, self.sequence, TIE_RANK[self.kind], self.event_id)
