"""The change feed's changes: each recorded fact, and each signal, as one change (contract,
"The change feed"), in the domain's words and the contract's JSON shape.

A change's `position` is derived from the stored event it comes from: its notification id times
`SLOTS`, plus its slot among the changes that event makes (a fact's `prescription.changed`
first, then its `prescription.needs_review`). So positions only grow with the store, never
change, and a rebuild of the feed gives every change the position it had: a consumer's saved
position stays its resume point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.facts import Fact
from domain.instants import format_instant
from domain.names import (
    DELIVERY_PARKED,
    NEEDS_REVIEW,
    PRESCRIPTION_CHANGED,
    REQUEST_OVERDUE,
)
from domain.signals import new_anomalies
from domain.state import OpenRequest, PrescriptionState

# Changes per stored event, at most: a fact makes two (changed, needs_review); the others one.
SLOTS = 4


def position(notification_id: int, slot: int = 0) -> int:
    return notification_id * SLOTS + slot


@dataclass(frozen=True)
class Change:
    position: int
    type: str
    prescription_id: str
    recorded_at: datetime
    fields: Mapping[str, Any] = field(default_factory=dict)  # the type's own, in order
    state: PrescriptionState | None = None

    @property
    def status(self) -> str | None:
        """The state's status after the change (what a subscription's `statuses` match)."""
        return self.state.status if self.state else None

    @property
    def patient_id(self) -> str | None:
        patient = self.state.patient if self.state else None
        return patient.drx_patient_id if patient else None

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "position": self.position,
            "type": self.type,
            "prescription_id": self.prescription_id,
            **self.fields,
            "recorded_at": format_instant(self.recorded_at),
        }
        if self.state is not None:
            document["state"] = self.state.as_dict()
        return document


def fact_changes(
    notification_id: int,
    recorded_at: datetime,
    fact: Fact,
    before: PrescriptionState,
    after: PrescriptionState,
) -> list[Change]:
    """A recorded fact's changes: `prescription.changed`, and `prescription.needs_review` when
    it added an anomaly (one change per fact: its `anomaly` is the first it added; a late
    terminal fact can add several, all of which the state lists)."""
    subject = after.prescription_id
    changes = [
        Change(
            position(notification_id),
            PRESCRIPTION_CHANGED,
            subject,
            recorded_at,
            {
                "event_id": fact.event_id,
                "fact_type": fact.drx_type,
                "occurred_at": format_instant(fact.occurred_at),
            },
            after,
        )
    ]
    added = new_anomalies(before, after)
    if added:
        first = added[0]
        changes.append(
            Change(
                position(notification_id, 1),
                NEEDS_REVIEW,
                subject,
                recorded_at,
                {
                    "event_id": fact.event_id,
                    "anomaly": {"kind": first.kind, "event_id": first.event_id, "type": first.type},
                },
                after,
            )
        )
    return changes


def overdue_change(
    notification_id: int, recorded_at: datetime, request: OpenRequest, state: PrescriptionState
) -> Change:
    return Change(
        position(notification_id),
        REQUEST_OVERDUE,
        state.prescription_id,
        recorded_at,
        {
            "request": {
                "kind": request.kind,
                "request_id": request.request_id,
                "opened_at": format_instant(request.opened_at),
            }
        },
        state,
    )


def delivery_change(
    notification_id: int,
    recorded_at: datetime,
    change_type: str,
    *,
    event_id: str,
    drx_type: str,
    subject: str,
    reason: str | None = None,
) -> Change:
    """`delivery.parked` (with its reason) or `delivery.conflict`; `prescription_id` is the
    delivery's subject, as DRx gave it."""
    delivery: dict[str, Any] = {"event_id": event_id, "type": drx_type, "subject": subject}
    if change_type == DELIVERY_PARKED:
        delivery["reason"] = reason
    return Change(
        position(notification_id), change_type, subject, recorded_at, {"delivery": delivery}
    )
