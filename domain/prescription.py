"""The Prescription aggregate: the append-only record of the facts DRx reported about a subject."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.chain import GENESIS, fact_hash
from domain.fact_data import canonical_json
from domain.facts import Fact, FactKind
from domain.ids import prescription_id
from domain.state import PrescriptionState, derive_state


@dataclass(frozen=True)
class RecordedFact:
    """A fact as stored: its place among the prescription's facts, when we learnt it, and its
    link in the chain (`hash` is empty for facts recorded before the chain existed)."""

    number: int
    recorded_at: datetime
    fact: Fact
    hash: str = ""


class Prescription(Aggregate):
    """One prescription (one DRx `subject`); its state is derived, never stored.

    The aggregate's first stored event is `Opened`; each fact follows as its own event, so
    fact number N is the aggregate's version N + 1.
    """

    @staticmethod
    def create_id(subject: str) -> UUID:
        return prescription_id(subject)

    class Opened(Aggregate.Created):
        subject: str

    @event(Opened)
    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.recorded: list[RecordedFact] = []
        self._event_ids: set[str] = set()

    class FactRecorded(Aggregate.Event):
        """Base of the fact events. `data` and `correlation` are kept as canonical JSON text,
        so that no DRx payload can be mistaken for an encoded type by the store's transcoder."""

        kind: ClassVar[FactKind]
        # v2 added `hash`, the fact's link in the prescription's chain (domain/chain.py).
        class_version: ClassVar[int] = 2
        event_id: str
        occurred_at: datetime
        sequence: int
        data: str
        correlation: str
        hash: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["hash"] = ""  # recorded before the chain existed; the audit says so

        def to_fact(self) -> Fact:
            return Fact.read(
                self.event_id,
                self.kind,
                self.occurred_at,
                self.sequence,
                self.data,  # the stored text, read in one pass
                json.loads(self.correlation),
            )

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Prescription)
            number = len(aggregate.recorded) + 1
            aggregate._add(RecordedFact(number, self.timestamp, self.to_fact(), self.hash))

    class Received(FactRecorded):
        kind = FactKind.RECEIVED

    class Sent(FactRecorded):
        kind = FactKind.SENT

    class Updated(FactRecorded):
        kind = FactKind.UPDATED

    class ChangeRequested(FactRecorded):
        kind = FactKind.CHANGE_REQUESTED

    class ChangeApproved(FactRecorded):
        kind = FactKind.CHANGE_APPROVED

    class ChangeDenied(FactRecorded):
        kind = FactKind.CHANGE_DENIED

    class CancelRequested(FactRecorded):
        kind = FactKind.CANCEL_REQUESTED

    class Cancelled(FactRecorded):
        kind = FactKind.CANCELLED

    class CancelDenied(FactRecorded):
        kind = FactKind.CANCEL_DENIED

    class RenewalRequested(FactRecorded):
        kind = FactKind.RENEWAL_REQUESTED

    class RenewalApproved(FactRecorded):
        kind = FactKind.RENEWAL_APPROVED

    class RenewalDenied(FactRecorded):
        kind = FactKind.RENEWAL_DENIED

    class ProcessingReported(FactRecorded):
        kind = FactKind.PROCESSING

    class PutOnHold(FactRecorded):
        kind = FactKind.ON_HOLD

    class Dispensed(FactRecorded):
        kind = FactKind.DISPENSED

    class ReadyForPickup(FactRecorded):
        kind = FactKind.READY_FOR_PICKUP

    class Shipped(FactRecorded):
        kind = FactKind.SHIPPED

    class Delivered(FactRecorded):
        kind = FactKind.DELIVERED

    class Transferred(FactRecorded):
        kind = FactKind.TRANSFERRED

    class Rejected(FactRecorded):
        kind = FactKind.REJECTED

    def _add(self, recorded: RecordedFact) -> None:
        self.recorded.append(recorded)
        self._event_ids.add(recorded.fact.event_id)

    def has_fact(self, event_id: str) -> bool:
        return event_id in self._event_ids

    def record(self, fact: Fact) -> bool:
        """Record the fact unless its id is already recorded (contract 4.2); True when recorded."""
        if self.has_fact(fact.event_id):
            return False
        # The state with the new fact, derived before the fact is recorded: a fact our code
        # cannot handle fails here, before it exists, instead of breaking every later read.
        derive_state(self.subject, [*(r.fact for r in self.recorded), fact])
        event_class = EVENT_CLASS_FOR[fact.kind]
        recorded_at = event_class.create_timestamp()
        previous = self.recorded[-1].hash if self.recorded else GENESIS
        self.trigger_event(
            event_class,
            timestamp=recorded_at,
            event_id=fact.event_id,
            occurred_at=fact.occurred_at,
            sequence=fact.sequence,
            data=fact.text,
            correlation=canonical_json(fact.correlation),
            hash=fact_hash(previous, self.subject, self.fact_count + 1, fact, recorded_at),
        )
        return True

    @property
    def fact_count(self) -> int:
        return len(self.recorded)

    def state(self, recorded_until: datetime | None = None) -> PrescriptionState:
        """The current state, or the state from the facts recorded up to `recorded_until`."""
        facts = [
            r.fact
            for r in self.recorded
            if recorded_until is None or r.recorded_at <= recorded_until
        ]
        return derive_state(self.subject, facts)


EVENT_CLASS_FOR: Mapping[FactKind, type[Prescription.FactRecorded]] = {
    cls.kind: cls
    for cls in vars(Prescription).values()
    if isinstance(cls, type)
    and issubclass(cls, Prescription.FactRecorded)
    and cls is not Prescription.FactRecorded
}
assert set(EVENT_CLASS_FOR) == set(FactKind), "every kind of fact needs its event class"
