"""The Prescription aggregate: the append-only record of the facts DRx reported about a subject.

What a new fact needs of the aggregate does not grow with its history (issue 18): the number
and hash of its last fact (the chain), and its state (to check that our code can fold the new
fact, before it is stored). The aggregate keeps the state folded so far (`extend_state`), and
the store keeps a snapshot of it every `SNAPSHOT_INTERVAL` versions (`Prescriptions` takes
them): a prescription is loaded from its last snapshot and the few facts recorded after it,
whatever the number of facts before. Snapshots are a cache: derived from the events, safe to
delete (the next load reads every event again), and checked against the facts they fold by
`drx audit verify` (`domain.audit`), since every new fact is recorded on one.

- A fact that orders after every fact folded (the usual case) extends the state: one fold step.
- A late fact (DRx's deliveries are unordered) that orders after what the snapshot folded has
  the state folded again from the snapshot's, over the few facts since (`_derive`).
- One that orders before it has the state derived again from every fact, read from the store
  through the history the loader attached (`attach`), and is followed by a snapshot, so that
  the next load does not read them again. Should that snapshot be lost (a crash between the
  commit and the snapshot, or snapshots deleted), the next load finds a fact in its tail that
  orders before the snapshot's and derives the state from every fact again: slower, never
  wrong.
- Repeats are refused before they reach the aggregate: a DRx id is one delivery, processed
  once (`domain.handlers`); the state's fold takes the first of a repeated id in any case.
- The whole history (for `history`, `as_of`, the console, FHIR) is read from the events by
  `Prescriptions.recorded_facts`, not kept in the aggregate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as LibrarySnapshot
from eventsourcing.utils import get_topic

from domain.chain import GENESIS, fact_hash
from domain.fact_data import canonical_json
from domain.facts import Fact, FactKind
from domain.ids import prescription_id
from domain.state import PrescriptionState, derive_state, extend_state, state_from_dict

# A snapshot every this many versions (and after each late fact): a load reads at most this
# many events after the last snapshot.
SNAPSHOT_INTERVAL = 8

# A prescription's facts as stored up to one of its versions (`Prescriptions.facts_until`).
History = Callable[[UUID, int], list[Fact]]
# A fact's place in contract order (`Fact.order_key`).
Key = tuple[datetime, int, int, str]


@dataclass(frozen=True)
class RecordedFact:
    """A fact as stored: its place among the prescription's facts, when we learnt it, and its
    link in the chain (`hash` is empty for facts recorded before the chain existed)."""

    number: int
    recorded_at: datetime
    fact: Fact
    hash: str = ""


class Prescription(Aggregate):
    """One prescription (one DRx `subject`); see the module's docstring.

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
        self.fact_count = 0
        self.last_hash = GENESIS
        self._begin(None, None, 1, complete=True)

    def _begin(
        self, base: PrescriptionState | None, key: Key | None, version: int, *, complete: bool
    ) -> None:
        """Where the fold starts: `base` folds the facts up to `version` (None: no fact yet),
        `key` the last of them in contract order; the facts applied after it go to the tail.
        `complete`: the tail holds every fact (built from the first event)."""
        self._base, self._base_key, self._base_version = base, key, version
        self._tail: list[Fact] = []
        self._complete = complete
        empty = derive_state(self.subject, []) if complete else None
        self._state: PrescriptionState | None = base if base is not None else empty
        self._key: Key | None = key
        self._history: History | None = None
        self._late_for_base = False
        # The state and fact `record` prepared, for `_applied`.
        self._prepared: tuple[PrescriptionState, Fact] | None = None

    def attach(self, history: History) -> None:
        """How to read this prescription's stored facts, should a late fact need them all."""
        self._history = history

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
            aggregate._applied(self)

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

    class Snapshot(LibrarySnapshot):
        """The fold as stored: the chain's tail and the state (its JSON shape) with where it
        stands, instead of the library's copy of every attribute. A change to this shape, or to
        the state's, comes with a migration that deletes the snapshots (they are a cache)."""

        @classmethod
        def take(cls, aggregate: Any) -> Any:
            assert isinstance(aggregate, Prescription)
            state, key = aggregate._fold()
            return cls(
                originator_id=aggregate.id,
                originator_version=aggregate.version,
                timestamp=cls.create_timestamp(),
                topic=get_topic(Prescription),
                state={
                    "subject": aggregate.subject,
                    "fact_count": aggregate.fact_count,
                    "last_hash": aggregate.last_hash,
                    "created_on": aggregate.created_on,
                    "modified_on": aggregate.modified_on,
                    "fold": canonical_json(state.as_dict()),
                    "last": list(key) if key is not None else None,
                },
            )

        def mutate(self, _: Any) -> Prescription:
            found = self.state
            prescription = object.__new__(Prescription)
            prescription._id = self.originator_id
            prescription._version = self.originator_version
            prescription._created_on = found["created_on"]
            prescription._modified_on = found["modified_on"]
            prescription._pending_events = []
            prescription.subject = found["subject"]
            prescription.fact_count = found["fact_count"]
            prescription.last_hash = found["last_hash"]
            last = found["last"]
            key = (last[0], last[1], last[2], last[3]) if last else None
            base = state_from_dict(json.loads(found["fold"]))
            prescription._begin(base, key, self.originator_version, complete=False)
            return prescription

    def _applied(self, recorded: Prescription.FactRecorded) -> None:
        """A fact event applied: the chain's tail moves on, the fold goes on when it can."""
        prepared, self._prepared = self._prepared, None
        fact = prepared[1] if prepared is not None else recorded.to_fact()
        self.fact_count += 1
        self.last_hash = recorded.hash
        self._tail.append(fact)
        key = fact.order_key()
        if prepared is not None:  # recorded here: `record` derived the state already
            self._state = prepared[0]
        elif self._state is not None and self._key is not None and key > self._key:
            self._state = extend_state(self._state, fact)  # the fold's next step
        elif self._state is not None and self._key is None and self._state.version == 0:
            self._state = extend_state(self._state, fact)  # the first fact
        else:
            self._state = None  # derived again when asked for (`_fold`)
        self._key = key if self._key is None else max(self._key, key)

    def _fold(self) -> tuple[PrescriptionState, Key | None]:
        """The state of every fact, and the last fact's key in contract order."""
        if self._state is None:
            self._state = self._derive([])
        return self._state, self._key

    def _derive(self, more: list[Fact]) -> PrescriptionState:
        """The state of every fact and `more`, from as few facts as it can:
        - built from its first event, the aggregate holds them all: derived from them;
        - when the facts after the base (the snapshot's state) all order after the last fact
          the base folded, the base extended by them in contract order (a late fact among the
          last few facts costs no more than the others);
        - else every fact, the base's read from the store (`_every_fact`)."""
        facts = [*self._tail, *more]
        if self._complete:
            return derive_state(self.subject, facts)
        if self._base is not None and (
            self._base_key is None or all(f.order_key() > self._base_key for f in facts)
        ):
            state = self._base
            for fact in sorted(facts, key=Fact.order_key):
                state = extend_state(state, fact)
            return state
        self._late_for_base = True
        return derive_state(self.subject, [*self._every_fact(), *more])

    def _every_fact(self) -> list[Fact]:
        """Every fact: those the snapshot folded, read from the store, and those after it.
        From then on the aggregate holds them all, as one built from its first event does."""
        if self._history is None:  # every loader attaches one (`Prescriptions`, the unit of work)
            msg = f"{self.subject}: loaded from a snapshot without a way to its stored facts"
            raise RuntimeError(msg)
        earlier = self._history(self.id, self._base_version) if self._base_version > 1 else []
        self._tail = [*earlier, *self._tail]
        self._complete = True
        return self._tail

    def record(self, fact: Fact) -> None:
        """Record the fact. The state with it is derived first: a fact our code cannot handle
        fails here, before it exists, instead of breaking every later read."""
        state, key = self._fold()
        if key is None or fact.order_key() > key:
            after = extend_state(state, fact)  # the usual case: the fold's next step
        else:
            after = self._derive([fact])  # a late fact
        event_class = EVENT_CLASS_FOR[fact.kind]
        recorded_at = event_class.create_timestamp()
        self._prepared = (after, fact)
        self.trigger_event(
            event_class,
            timestamp=recorded_at,
            event_id=fact.event_id,
            occurred_at=fact.occurred_at,
            sequence=fact.sequence,
            data=fact.text,
            correlation=canonical_json(fact.correlation),
            hash=fact_hash(self.last_hash, self.subject, self.fact_count + 1, fact, recorded_at),
        )

    @property
    def snapshot_due(self) -> bool:
        """The next load should start from a snapshot of it now (`Prescriptions` takes one):
        a fact came that orders before what the last snapshot folded (its state needed every
        fact from the store), or it was read from more events than a snapshot leaves to read
        (a store whose snapshots were deleted, or kept before they existed)."""
        return self._late_for_base or (self._complete and len(self._tail) > SNAPSHOT_INTERVAL)

    def state(self) -> PrescriptionState:
        """The current state: the pure function of every fact (`derive_state`)."""
        return self._fold()[0]


EVENT_CLASS_FOR: Mapping[FactKind, type[Prescription.FactRecorded]] = {
    cls.kind: cls
    for cls in vars(Prescription).values()
    if isinstance(cls, type)
    and issubclass(cls, Prescription.FactRecorded)
    and cls is not Prescription.FactRecorded
}
assert set(EVENT_CLASS_FOR) == set(FactKind), "every kind of fact needs its event class"
