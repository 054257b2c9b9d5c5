"""The Prescriptions application: the event-sourced store of prescriptions and deliveries, and
the queries that rebuild from it. Commands go through `domain.handlers`, in a unit of work
(`domain.unit_of_work`); this class only stores and reads.

It holds the one override of the eventsourcing library's internals: `save` collects the
aggregates' events itself and then runs the library's own steps (`_record`, `_take_snapshots`,
`_notify`), where the library's `save` asks of every object, with `isinstance` against typing
Protocols, whether it is an event or an aggregate (about 5% of the webhook's CPU on Python
3.11). `tests/unit/test_application.py` fails when the library's `save` changes, so that this
copy is looked at again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
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
from domain.prescription import Prescription, RecordedFact
from domain.state import PrescriptionState

T = TypeVar("T")


class Prescriptions(Application[Any]):
    """Configured only by the `env` given to it (`infrastructure.eventstore`), never by the
    process environment, so that settings enter the service in one place."""

    name = "drx"  # the store's tables are named after it: drx_events

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        return Environment(name, dict(env or {}))

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[Any]]:
        """The library's `save` for aggregates (see the module's docstring)."""
        processing: ProcessingEvent[Any] = ProcessingEvent()
        for aggregate in aggregates:
            if aggregate is None:  # as the library allows
                continue
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs.update(kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    # Queries

    def prescription(self, subject: str) -> Prescription:
        return self._get(Prescription, prescription_id(subject), PrescriptionNotFoundError(subject))

    def delivery(self, event_id: str) -> Delivery:
        return self._get(Delivery, delivery_id(event_id), DeliveryNotFoundError(event_id))

    def state(self, subject: str, as_of: datetime | None = None) -> PrescriptionState:
        """The current state, or what the facts recorded up to `as_of` said; 404 before any."""
        state = self.prescription(subject).state(recorded_until=as_of)
        if state.version == 0:
            raise PrescriptionNotFoundError(subject)
        return state

    def history(self, subject: str) -> list[RecordedFact]:
        return list(self.prescription(subject).recorded)

    def facts_until(self, aggregate_id: UUID, version: int) -> list[Fact]:
        """A prescription's facts as they stood at one of its versions."""
        prescription: object = self.repository.get(aggregate_id, version=version)
        assert isinstance(prescription, Prescription)
        return [r.fact for r in prescription.recorded]

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
