"""The Prescriptions application: the event-sourced store of prescriptions and deliveries, and
the queries that rebuild from it. Commands go through `domain.handlers`, in a unit of work
(`domain.unit_of_work`); this class only stores and reads.

It holds the overrides of the eventsourcing library's internals: `save` collects the aggregates'
events itself and then runs the library's own steps (`_record`, `_notify`), where the library's
`save` asks of every object, with `isinstance` against typing Protocols, whether it is an event
or an aggregate (about 5% of the webhook's CPU on Python 3.11); it takes the prescriptions'
snapshots itself (`_snapshots_due`) and hands them to the recorder to be written in the same
transaction as the events, in place of the library's `_take_snapshots` (which reads each
aggregate back after the commit and writes it in a transaction of its own). The repository
attaches to each prescription it loads the way to its stored facts (`domain.prescription`).
`tests/unit/test_application.py` fails when the library's `save` changes, so that this copy is
looked at again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import Recording
from eventsourcing.utils import Environment

from domain.delivery import Delivery
from domain.errors import (
    DeliveryNotFoundError,
    DomainError,
    HistoryDamagedError,
    PrescriptionNotFoundError,
)
from domain.facts import Fact
from domain.ids import delivery_id, prescription_id
from domain.prescription import SNAPSHOT_INTERVAL, History, Prescription, RecordedFact
from domain.state import PrescriptionState, derive_state

T = TypeVar("T")


class Prescriptions(Application[Any]):
    """Configured only by the `env` given to it (`infrastructure.eventstore`), never by the
    process environment, so that settings enter the service in one place."""

    name = "drx"  # the store's tables are named after it: drx_events, drx_snapshots

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        # Prescriptions are snapshotted (`domain.prescription`): its snapshot store is made.
        return Environment(name, {"IS_SNAPSHOTTING_ENABLED": "y", **dict(env or {})})

    def construct_repository(self) -> Repository[Any]:
        """The library's repository, attaching to each prescription it loads the way to its
        stored facts (a late fact after a snapshot needs them all)."""
        return _AttachingRepository(self.facts_until, self.events, snapshot_store=self.snapshots)

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[Any]]:
        """The library's `save` for aggregates (see the module's docstring)."""
        processing: ProcessingEvent[Any] = ProcessingEvent()
        for aggregate in aggregates:
            if aggregate is None:  # as the library allows
                continue
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs.update(kwargs)
        snapshots = self._snapshots_due(processing)
        in_transaction = bool(snapshots) and getattr(self.recorder, "writes_snapshots", False)
        if in_transaction:
            stored = [self.mapper.to_stored_event(snapshot) for snapshot in snapshots]
            processing.saved_kwargs["snapshots"] = stored
        recordings = self._record(processing)
        if snapshots and not in_transaction and self.snapshots is not None:
            self.snapshots.put(snapshots)  # a store of the library's own (tests in memory)
        self._notify(recordings)
        return recordings

    def _snapshots_due(self, processing_event: ProcessingEvent[Any]) -> list[Any]:
        """A snapshot of each saved prescription that passed a multiple of `SNAPSHOT_INTERVAL`
        versions or recorded a late fact, taken from the aggregate in memory (the library's
        `_take_snapshots` reads each one back from the store first, after the commit). The
        recorder writes them in the save's own transaction (`writes_snapshots`)."""
        versions: dict[UUID, list[int]] = {}
        for stored in processing_event.events:
            versions.setdefault(stored.originator_id, []).append(stored.originator_version)
        snapshots = []
        for aggregate_id, saved in versions.items():
            aggregate = processing_event.aggregates.get(aggregate_id)
            if not isinstance(aggregate, Prescription):
                continue
            if aggregate.snapshot_due or any(v % SNAPSHOT_INTERVAL == 0 for v in saved):
                snapshots.append(Prescription.Snapshot.take(aggregate))
        return snapshots

    # Queries

    def prescription(self, subject: str) -> Prescription:
        return self._get(Prescription, prescription_id(subject), PrescriptionNotFoundError(subject))

    def delivery(self, event_id: str) -> Delivery:
        return self._get(Delivery, delivery_id(event_id), DeliveryNotFoundError(event_id))

    def state(self, subject: str, as_of: datetime | None = None) -> PrescriptionState:
        """The current state, or what the facts recorded up to `as_of` said; 404 before any."""
        if as_of is None:
            state = self.prescription(subject).state()
        else:
            facts = [r.fact for r in self.history(subject) if r.recorded_at <= as_of]
            state = derive_state(subject, facts)
        if state.version == 0:
            raise PrescriptionNotFoundError(subject)
        return state

    def history(self, subject: str) -> list[RecordedFact]:
        """Every fact of the prescription, in the order recorded, read from its events."""
        recorded = self.recorded_facts(prescription_id(subject))
        if recorded is None:
            raise PrescriptionNotFoundError(subject)
        return recorded

    def recorded_facts(
        self, aggregate_id: UUID, version: int | None = None
    ) -> list[RecordedFact] | None:
        """A prescription's facts as stored up to one of its versions (all: None), read from its
        events (never from a snapshot); None when it has none stored."""
        return recorded_facts(aggregate_id, self.events.get(aggregate_id, lte=version))

    def facts_until(self, aggregate_id: UUID, version: int) -> list[Fact]:
        """A prescription's facts as they stood at one of its versions."""
        return [r.fact for r in self.recorded_facts(aggregate_id, version) or []]

    def delivery_at(self, aggregate_id: UUID, version: int) -> Delivery:
        """A delivery as it stood at one of its versions."""
        delivery: object = self.repository.get(aggregate_id, version=version)
        assert isinstance(delivery, Delivery)
        return delivery

    def _get(self, cls: type[T], aggregate_id: UUID, missing: DomainError) -> T:
        try:
            found: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise missing from None
        except OriginatorVersionError:
            raise HistoryDamagedError(missing.args[0]) from None
        assert isinstance(found, cls)
        return found


class _AttachingRepository(Repository[Any]):
    def __init__(self, history: History, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history = history

    def get(self, *args: Any, **kwargs: Any) -> Any:
        found = super().get(*args, **kwargs)
        if isinstance(found, Prescription):
            found.attach(self._history)
        return found


def recorded_facts(aggregate_id: UUID, events: Iterable[Any]) -> list[RecordedFact] | None:
    """A prescription's facts from its events in version order (`Prescriptions.recorded_facts`);
    HistoryDamagedError when one is missing or moved; None when there are none."""
    recorded = []
    expected = 1
    for stored in events:
        if stored.originator_version != expected:
            raise HistoryDamagedError(str(aggregate_id))  # one missing or moved
        expected += 1
        if isinstance(stored, Prescription.FactRecorded):
            number = stored.originator_version - 1
            recorded.append(RecordedFact(number, stored.timestamp, stored.to_fact(), stored.hash))
    return recorded if expected > 1 else None
