"""The prescription's state as a pure function of its facts (contract section 4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain import fact_data as said
from domain.facts import STATUS_CHANGING, Fact, FactKind
from domain.instants import format_instant

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
class Shipment:
    """The current fill's shipment."""

    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    eta: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if value is not None}


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
    patient: said.Patient | None = None
    prescriber: said.Prescriber | None = None
    pharmacy: said.Pharmacy | None = None
    medication: said.Medication | None = None
    shipment: Shipment | None = None
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
            "patient": _document(self.patient),
            "prescriber": _document(self.prescriber),
            "pharmacy": _document(self.pharmacy),
            "medication": _document(self.medication),
            "shipment": self.shipment.as_dict() if self.shipment else None,
            "last_event_type": self.last_event_type,
            "last_occurred_at": (
                format_instant(self.last_occurred_at) if self.last_occurred_at else None
            ),
            "version": self.version,
        }


def _document(value: said.Value | None) -> dict[str, Any] | None:
    return None if value is None else said.to_document(value)


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


def extend_state(state: PrescriptionState, fact: Fact) -> PrescriptionState:
    """The state with one more fact that orders after every fact `state` was derived from: the
    same as `derive_state` over all of them (the fold's next step), at the cost of one fact.
    The caller keeps the last fact's `order_key` and derives the whole state again for a fact
    that orders before it (a late one)."""
    draft = _Draft.resume(state)
    draft.apply(fact)
    return draft.freeze()


def state_from_dict(document: Mapping[str, Any]) -> PrescriptionState:
    """A state from its JSON shape (`PrescriptionState.as_dict`): the inverse, so that a state
    stored as the API shows it can be extended."""

    def instant(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text else None

    def value(model: type[said.Value], found: Mapping[str, Any] | None) -> Any:
        return model.model_validate(found) if found is not None else None

    shipment = document.get("shipment")
    return PrescriptionState(
        prescription_id=document["prescription_id"],
        status=document["status"],
        provisional=document["provisional"],
        fill_number=document["fill_number"],
        refills_remaining=document["refills_remaining"],
        anomalies=tuple(
            Anomaly(a["kind"], a["event_id"], a["type"]) for a in document["anomalies"]
        ),
        open_requests=tuple(
            OpenRequest(r["kind"], r["request_id"], datetime.fromisoformat(r["opened_at"]))
            for r in document["open_requests"]
        ),
        patient=value(said.Patient, document.get("patient")),
        prescriber=value(said.Prescriber, document.get("prescriber")),
        pharmacy=value(said.Pharmacy, document.get("pharmacy")),
        medication=value(said.Medication, document.get("medication")),
        shipment=Shipment(**shipment) if shipment is not None else None,
        last_event_type=document["last_event_type"],
        last_occurred_at=instant(document["last_occurred_at"]),
        version=document["version"],
    )


def _field(data: said.FactData, name: str) -> Any:
    """The value of a field that only some kinds of data have, else None. (Not `getattr` with a
    default: pydantic formats an error message for every missing attribute it is asked for,
    which cost a tenth of the state's fold. A model's field values are its instance dict.)"""
    return vars(data).get(name)


class _Draft:
    def __init__(self, prescription_id: str) -> None:
        self.prescription_id = prescription_id
        self.status: str | None = None
        self.provisional = True
        self.fill_number = 0
        self.refills_remaining: int | None = None
        self.anomalies: list[Anomaly] = []
        self.open_requests: list[OpenRequest] = []
        self.patient: said.Patient | None = None
        self.prescriber: said.Prescriber | None = None
        self.pharmacy: said.Pharmacy | None = None
        self.medication: said.Medication | None = None
        self.shipment: Shipment | None = None
        self.last_event_type: str | None = None
        self.last_occurred_at: datetime | None = None
        self.version = 0

    @classmethod
    def resume(cls, state: PrescriptionState) -> _Draft:
        """A draft that goes on from a frozen state."""
        draft = cls(state.prescription_id)
        draft.status, draft.provisional = state.status, state.provisional
        draft.fill_number, draft.refills_remaining = state.fill_number, state.refills_remaining
        draft.anomalies, draft.open_requests = list(state.anomalies), list(state.open_requests)
        draft.patient, draft.prescriber = state.patient, state.prescriber
        draft.pharmacy, draft.medication = state.pharmacy, state.medication
        draft.shipment = state.shipment
        draft.last_event_type, draft.last_occurred_at = (
            state.last_event_type,
            state.last_occurred_at,
        )
        draft.version = state.version
        return draft

    def freeze(self) -> PrescriptionState:
        return PrescriptionState(
            prescription_id=self.prescription_id,
            status=self.status,
            provisional=self.provisional,
            fill_number=self.fill_number,
            refills_remaining=self.refills_remaining,
            anomalies=tuple(self.anomalies),
            open_requests=tuple(self.open_requests),
            patient=self.patient,
            prescriber=self.prescriber,
            pharmacy=self.pharmacy,
            medication=self.medication,
            shipment=self.shipment,
            last_event_type=self.last_event_type,
            last_occurred_at=self.last_occurred_at,
            version=self.version,
        )

    def apply(self, fact: Fact) -> None:
        self.version += 1
        self.last_event_type, self.last_occurred_at = fact.drx_type, fact.occurred_at
        if isinstance(fact.data, said.Received):
            self._received(fact.data)
            return
        if fact.kind in STATUS_CHANGING and self.status in TERMINAL_STATUSES:
            self.anomalies.append(Anomaly("after_terminal", fact.event_id, fact.drx_type))
            return
        if fact.kind in STATUS_CHANGING:
            self._status_change(fact)
        self._requests_and_details(fact)

    def _received(self, data: said.Received) -> None:
        if self.refills_remaining is None and data.medication is not None:
            self.refills_remaining = data.medication.refills_authorized
        self.provisional = False
        self.status = self.status or "received"
        self._replace_details(data)

    def _replace_details(self, data: said.Received | said.Updated) -> None:
        """Each one the fact gives replaces the one before, whole (contract 4.7)."""
        if data.patient is not None:
            self.patient = data.patient
        if data.prescriber is not None:
            self.prescriber = data.prescriber
        if data.pharmacy is not None:
            self.pharmacy = data.pharmacy
        if data.medication is not None:
            self.medication = data.medication

    def _status_change(self, fact: Fact) -> None:
        data = fact.data
        fill = _field(data, "fill_number")
        if isinstance(fill, int) and fill > self.fill_number:
            # A later fill starts: the previous fill's shipment is no longer the current one.
            self.fill_number, self.shipment = fill, None
        match data:
            case said.Dispensed():
                self.refills_remaining = data.refills_remaining
            case said.Shipped():
                self.shipment = Shipment(
                    data.carrier, data.tracking_number, data.tracking_url, data.eta
                )
        if fact.kind is FactKind.DELIVERED:
            self.status = "completed" if self.refills_remaining == 0 else "delivered"
        elif isinstance(data, said.Rejected):
            self.status = "error" if data.retryable else "rejected"
        else:
            self.status = _STATUS_AFTER[fact.kind]

    def _requests_and_details(self, fact: Fact) -> None:
        kind, data = fact.kind, fact.data
        if kind in _REQUEST_OPENED_BY:
            request_id = _field(data, "request_id")
            assert isinstance(request_id, str)  # the data of every opening fact requires it
            opened = OpenRequest(_REQUEST_OPENED_BY[kind], request_id, fact.occurred_at)
            self.open_requests = [
                r for r in self.open_requests if r.request_id != opened.request_id
            ]
            self.open_requests.append(opened)
        elif kind in _REQUEST_CLOSED_BY:
            # A response closes only an open request of its own kind and id; otherwise it is
            # recorded and closes nothing (section 4.5).
            closed = (_REQUEST_CLOSED_BY[kind], _field(data, "request_id"))
            self.open_requests = [r for r in self.open_requests if (r.kind, r.request_id) != closed]
        match data:
            case said.Updated():
                self._replace_details(data)
            case said.ChangeApproved(approved_medication=said.Medication() as medication):
                self.medication = medication
            case said.RenewalApproved():
                self.refills_remaining = data.refills_authorized
                if self.status == "completed" and data.refills_authorized > 0:
                    self.status = "delivered"
