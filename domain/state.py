"""The prescription's state as a pure function of its facts (contract section 4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from domain.facts import STATUS_CHANGING, Fact, FactKind

TERMINAL_STATUSES = frozenset({"cancelled", "transferred", "rejected"})

_REQUEST_OPENED_BY: Mapping[FactKind, str] = {
    FactKind.CHANGE_REQUESTED: "change",
    FactKind.CANCEL_REQUESTED: "cancel",
    FactKind.RENEWAL_REQUESTED: "renewal",
}
_REQUEST_CLOSED_BY: Mapping[FactKind, str] = {
    FactKind.CHANGE_APPROVED: "change",
    FactKind.CHANGE_DENIED: "change",
    FactKind.CANCEL_DENIED: "cancel",
    FactKind.CANCELLED: "cancel",
    FactKind.RENEWAL_APPROVED: "renewal",
    FactKind.RENEWAL_DENIED: "renewal",
}
# The status each status-changing fact leads to, where it does not depend on the fact's data.
_STATUS_AFTER: Mapping[FactKind, str] = {
    FactKind.SENT: "sent",
    FactKind.PROCESSING: "processing",
    FactKind.ON_HOLD: "on_hold",
    FactKind.DISPENSED: "dispensed",
    FactKind.READY_FOR_PICKUP: "ready_for_pickup",
    FactKind.SHIPPED: "shipped",
    FactKind.CANCELLED: "cancelled",
    FactKind.TRANSFERRED: "transferred",
}
_DETAILS = ("patient", "prescriber", "pharmacy", "medication")


def format_instant(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, the form every timestamp leaves the service in."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class OpenRequest:
    kind: str
    request_id: str
    opened_at: datetime


@dataclass(frozen=True)
class Anomaly:
    kind: str
    event_id: str
    type: str


@dataclass(frozen=True)
class PrescriptionState:
    """What the facts about one subject say, as the service shows it."""

    prescription_id: str
    status: str | None = None
    provisional: bool = True
    fill_number: int = 0
    refills_remaining: int | None = None
    anomalies: tuple[Anomaly, ...] = ()
    open_requests: tuple[OpenRequest, ...] = ()
    patient: Mapping[str, Any] | None = None
    prescriber: Mapping[str, Any] | None = None
    pharmacy: Mapping[str, Any] | None = None
    medication: Mapping[str, Any] | None = None
    shipment: Mapping[str, Any] | None = None
    last_event_type: str | None = None
    last_occurred_at: datetime | None = None
    version: int = 0

    @property
    def needs_review(self) -> bool:
        return bool(self.anomalies)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of contract/service-interface.md."""
        return {
            "prescription_id": self.prescription_id,
            "status": self.status,
            "provisional": self.provisional,
            "fill_number": self.fill_number,
            "refills_remaining": self.refills_remaining,
            "needs_review": self.needs_review,
            "anomalies": [
                {"kind": a.kind, "event_id": a.event_id, "type": a.type} for a in self.anomalies
            ],
            "open_requests": [
                {
                    "kind": r.kind,
                    "request_id": r.request_id,
                    "opened_at": format_instant(r.opened_at),
                }
                for r in self.open_requests
            ],
            "patient": _plain(self.patient),
            "prescriber": _plain(self.prescriber),
            "pharmacy": _plain(self.pharmacy),
            "medication": _plain(self.medication),
            "shipment": _plain(self.shipment),
            "last_event_type": self.last_event_type,
            "last_occurred_at": (
                format_instant(self.last_occurred_at) if self.last_occurred_at else None
            ),
            "version": self.version,
        }


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def ordered(facts: Iterable[Fact]) -> list[Fact]:
    """The facts once each (first of a repeated id wins), in contract order."""
    unique: dict[str, Fact] = {}
    for fact in facts:
        unique.setdefault(fact.event_id, fact)
    return sorted(unique.values(), key=Fact.order_key)


def derive_state(prescription_id: str, facts: Iterable[Fact]) -> PrescriptionState:
    """Fold the facts, in contract order, into the prescription's state."""
    state = PrescriptionState(prescription_id=prescription_id)
    for fact in ordered(facts):
        state = _apply(state, fact)
    return state


def _apply(state: PrescriptionState, fact: Fact) -> PrescriptionState:
    state = replace(
        state,
        version=state.version + 1,
        last_event_type=fact.drx_type,
        last_occurred_at=fact.occurred_at,
    )
    kind, data = fact.kind, fact.data
    if kind is FactKind.RECEIVED:
        return _received(state, data)
    if kind in STATUS_CHANGING and state.is_terminal:
        anomaly = Anomaly(kind="after_terminal", event_id=fact.event_id, type=fact.drx_type)
        return replace(state, anomalies=(*state.anomalies, anomaly))
    if kind in STATUS_CHANGING:
        state = _status_change(state, fact)
    return _requests_and_details(state, fact)


def _received(state: PrescriptionState, data: Mapping[str, Any]) -> PrescriptionState:
    refills = state.refills_remaining
    if refills is None:
        refills = (data.get("medication") or {}).get("refills_authorized")
    return replace(
        state,
        provisional=False,
        status=state.status or "received",
        refills_remaining=refills,
        **{name: data[name] for name in _DETAILS if data.get(name) is not None},
    )


def _status_change(state: PrescriptionState, fact: Fact) -> PrescriptionState:
    data = fact.data
    fill = data.get("fill_number")
    if isinstance(fill, int) and fill > state.fill_number:
        # A later fill starts: the previous fill's shipment is no longer the current one.
        state = replace(state, fill_number=fill, shipment=None)
    if fact.kind is FactKind.DISPENSED:
        state = replace(state, refills_remaining=data["refills_remaining"])
    if fact.kind is FactKind.SHIPPED:
        shipment = {
            key: data[key]
            for key in ("carrier", "tracking_number", "tracking_url", "eta")
            if data.get(key) is not None
        }
        state = replace(state, shipment=shipment)
    if fact.kind is FactKind.DELIVERED:
        status = "completed" if state.refills_remaining == 0 else "delivered"
    elif fact.kind is FactKind.REJECTED:
        status = "error" if data.get("retryable") else "rejected"
    else:
        status = _STATUS_AFTER[fact.kind]
    return replace(state, status=status)


def _requests_and_details(state: PrescriptionState, fact: Fact) -> PrescriptionState:
    kind, data = fact.kind, fact.data
    if kind in _REQUEST_OPENED_BY:
        opened = OpenRequest(_REQUEST_OPENED_BY[kind], data["request_id"], fact.occurred_at)
        others = tuple(r for r in state.open_requests if r.request_id != opened.request_id)
        state = replace(state, open_requests=(*others, opened))
    elif kind in _REQUEST_CLOSED_BY:
        # A response closes only an open request of its own kind and id; otherwise it is
        # recorded and closes nothing (section 4.5).
        closed = (_REQUEST_CLOSED_BY[kind], data.get("request_id"))
        state = replace(
            state,
            open_requests=tuple(r for r in state.open_requests if (r.kind, r.request_id) != closed),
        )

    if kind is FactKind.UPDATED:
        state = replace(state, **{n: data[n] for n in _DETAILS if data.get(n) is not None})
    elif kind is FactKind.CHANGE_APPROVED and data.get("approved_medication") is not None:
        state = replace(state, medication=data["approved_medication"])
    elif kind is FactKind.RENEWAL_APPROVED:
        refills = data["refills_authorized"]
        status = "delivered" if state.status == "completed" and refills > 0 else state.status
        state = replace(state, refills_remaining=refills, status=status)
    return state
