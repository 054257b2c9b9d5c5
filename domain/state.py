"""The prescription's state as a pure function of its facts (contract section 4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    """Fold the facts, in contract order, into the prescription's state.

    The fold mutates a private draft (one object per call, never shared) and freezes it at the
    end: the function stays pure, without copying the whole state at every fact.
    """
    draft = _Draft(prescription_id)
    for fact in ordered(facts):
        draft.apply(fact)
    return draft.freeze()


class _Draft:
    def __init__(self, prescription_id: str) -> None:
        self.prescription_id = prescription_id
        self.status: str | None = None
        self.provisional = True
        self.fill_number = 0
        self.refills_remaining: int | None = None
        self.anomalies: list[Anomaly] = []
        self.open_requests: list[OpenRequest] = []
        self.details: dict[str, Mapping[str, Any]] = {}
        self.shipment: Mapping[str, Any] | None = None
        self.last_event_type: str | None = None
        self.last_occurred_at: datetime | None = None
        self.version = 0

    def freeze(self) -> PrescriptionState:
        return PrescriptionState(
            prescription_id=self.prescription_id,
            status=self.status,
            provisional=self.provisional,
            fill_number=self.fill_number,
            refills_remaining=self.refills_remaining,
            anomalies=tuple(self.anomalies),
            open_requests=tuple(self.open_requests),
            patient=self.details.get("patient"),
            prescriber=self.details.get("prescriber"),
            pharmacy=self.details.get("pharmacy"),
            medication=self.details.get("medication"),
            shipment=self.shipment,
            last_event_type=self.last_event_type,
            last_occurred_at=self.last_occurred_at,
            version=self.version,
        )

    def apply(self, fact: Fact) -> None:
        self.version += 1
        self.last_event_type, self.last_occurred_at = fact.drx_type, fact.occurred_at
        kind, data = fact.kind, fact.data
        if kind is FactKind.RECEIVED:
            self._received(data)
            return
        if kind in STATUS_CHANGING and self.status in TERMINAL_STATUSES:
            self.anomalies.append(Anomaly("after_terminal", fact.event_id, fact.drx_type))
            return
        if kind in STATUS_CHANGING:
            self._status_change(fact)
        self._requests_and_details(fact)

    def _received(self, data: Mapping[str, Any]) -> None:
        if self.refills_remaining is None:
            self.refills_remaining = (data.get("medication") or {}).get("refills_authorized")
        self.provisional = False
        self.status = self.status or "received"
        self._replace_details(data, _DETAILS)

    def _replace_details(self, data: Mapping[str, Any], names: Iterable[str]) -> None:
        for name in names:
            if data.get(name) is not None:
                self.details[name] = data[name]

    def _status_change(self, fact: Fact) -> None:
        data = fact.data
        fill = data.get("fill_number")
        if isinstance(fill, int) and fill > self.fill_number:
            # A later fill starts: the previous fill's shipment is no longer the current one.
            self.fill_number, self.shipment = fill, None
        if fact.kind is FactKind.DISPENSED:
            self.refills_remaining = data["refills_remaining"]
        if fact.kind is FactKind.SHIPPED:
            self.shipment = {
                key: data[key]
                for key in ("carrier", "tracking_number", "tracking_url", "eta")
                if data.get(key) is not None
            }
        if fact.kind is FactKind.DELIVERED:
            self.status = "completed" if self.refills_remaining == 0 else "delivered"
        elif fact.kind is FactKind.REJECTED:
            self.status = "error" if data.get("retryable") else "rejected"
        else:
            self.status = _STATUS_AFTER[fact.kind]

    def _requests_and_details(self, fact: Fact) -> None:
        kind, data = fact.kind, fact.data
        if kind in _REQUEST_OPENED_BY:
            opened = OpenRequest(_REQUEST_OPENED_BY[kind], data["request_id"], fact.occurred_at)
            self.open_requests = [
                r for r in self.open_requests if r.request_id != opened.request_id
            ]
            self.open_requests.append(opened)
        elif kind in _REQUEST_CLOSED_BY:
            # A response closes only an open request of its own kind and id; otherwise it is
            # recorded and closes nothing (section 4.5).
            closed = (_REQUEST_CLOSED_BY[kind], data.get("request_id"))
            self.open_requests = [r for r in self.open_requests if (r.kind, r.request_id) != closed]
        if kind is FactKind.UPDATED:
            self._replace_details(data, _DETAILS)
        elif kind is FactKind.CHANGE_APPROVED and data.get("approved_medication") is not None:
            self.details["medication"] = data["approved_medication"]
        elif kind is FactKind.RENEWAL_APPROVED:
            refills = data["refills_authorized"]
            self.refills_remaining = refills
            if self.status == "completed" and refills > 0:
                self.status = "delivered"
