"""The Prescriptions application: a command is get, call, save; queries rebuild from the store."""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
)
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import IntegrityError, PersistenceError, Recording
from eventsourcing.utils import Environment

from domain.commands import ParkDelivery, RecordDelivery, ReplayDelivery
from domain.delivery import Delivery, RawDelivery, Repeat
from domain.errors import (
    ConcurrencyConflictError,
    DeliveryNotFoundError,
    DeliveryNotParkedError,
    DomainError,
    HistoryDamagedError,
    PrescriptionNotFoundError,
)
from domain.facts import Fact
from domain.ids import delivery_id, prescription_id
from domain.prescription import Prescription, RecordedFact
from domain.state import PrescriptionState

log = logging.getLogger(__name__)

T = TypeVar("T")

# A save that loses the optimistic-concurrency race is reloaded and tried again this often,
# after a short random pause that grows with each loss so that racing writers spread out.
MAX_SAVE_ATTEMPTS = 20
# A batch that loses the race is tried whole this often before its deliveries go one at a time.
MAX_BATCH_ATTEMPTS = 3
_BACKOFF_BASE_S = 0.002
_BACKOFF_MAX_S = 0.1


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PARKED = "parked"
    # A repeated id with another body, for a delivery already processed: kept and flagged,
    # answered as a duplicate (contract section 4, rule 2).
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Receipt:
    outcome: Outcome
    event_id: str
    reason: str | None = None


def describe_fault(exc: BaseException) -> str:
    """Name a fault in our own code without its message, which may quote patient data."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"internal error: {type(exc).__name__}{where}"


class Prescriptions(Application[Any]):
    """Records DRx deliveries as facts on Prescription aggregates.

    Configured only by the `env` given to it (see `infrastructure.eventstore`), never by the
    process environment, so that settings enter the service in one place.
    """

    name = "drx"

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        return Environment(name, dict(env or {}))

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[Any]]:
        """The library's `save`, without its runtime Protocol checks.

        The library asks of every object whether it is a domain event or can collect events,
        with `isinstance` against `typing` Protocols, which on Python 3.11 walks the Protocol's
        classes on every call: about 5% of the webhook's CPU. Everything this application saves
        is an aggregate, so its events are collected directly; the rest is the library's.
        """
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

    # Commands

    def record_delivery(self, command: RecordDelivery) -> Receipt:
        return self._save_with_retry(command.delivery.event_id, lambda: self._receive(command))

    def record_deliveries(self, commands: Sequence[RecordDelivery]) -> list[Receipt]:
        """Several deliveries in one transaction (group commit), each receipt in order.

        Deliveries already stored, or repeated within the batch, are answered duplicate. When
        another writer (a second web worker, say) moved one of the batch's prescriptions on or
        stored one of its deliveries first, the batch is reloaded and tried again, a few times.
        When anything else goes wrong (a fault in our code on one fact), the batch is dropped
        unsaved and each delivery takes the one-at-a-time path, which parks the faulty one.
        """
        for losses in range(MAX_BATCH_ATTEMPTS):
            if losses:
                time.sleep(random.uniform(0, _BACKOFF_BASE_S * 2**losses))  # noqa: S311
            try:
                return self._record_batch(commands)
            except IntegrityError:
                continue
            except PersistenceError:
                raise  # the store cannot take it: every delivery of the batch is answered 503
            except Exception:  # a fault in our own code: find and park the faulty delivery alone
                break
        return [self.record_delivery(command) for command in commands]

    def _record_batch(self, commands: Sequence[RecordDelivery]) -> list[Receipt]:
        receipts: list[Receipt] = []
        deliveries: list[Delivery] = []
        prescriptions, stored = self._load_batch(
            {prescription_id(c.delivery.subject) for c in commands},
            {delivery_id(c.delivery.event_id) for c in commands},
        )
        # Deliveries already stored are read, to tell a retry from a correction or a conflict.
        earlier = self._load_stored(stored) if stored else {}
        seen: set[str] = set()
        for command in commands:
            event_id, subject = command.delivery.event_id, command.delivery.subject
            if event_id in seen:
                receipts.append(Receipt(Outcome.DUPLICATE, event_id))
                continue
            seen.add(event_id)
            delivery, repeat = self._arrival(earlier.get(delivery_id(event_id)), command.delivery)
            if repeat is not None:
                receipts.append(repeat)
                if repeat.outcome is Outcome.CONFLICT:
                    deliveries.append(delivery)
                continue
            prescription = prescriptions.get(prescription_id(subject))
            if prescription is None:
                prescription = prescriptions[prescription_id(subject)] = Prescription(subject)
            recorded = self._record_fact(prescription, command.fact)
            delivery.mark_processed(fact_recorded=recorded)
            deliveries.append(delivery)
            receipts.append(Receipt(Outcome.ACCEPTED, event_id))
        self.save(*deliveries, *prescriptions.values())
        return receipts

    @staticmethod
    def _arrival(stored: Delivery | None, raw: RawDelivery) -> tuple[Delivery, Receipt | None]:
        """The delivery to go on with, and the receipt when there is nothing more to do: a new
        delivery, or a correction of a parked one, goes on (to its fact, or to be parked); a
        retry is a duplicate; another body for a processed one is kept as a conflict."""
        if stored is None:
            return Delivery.receive(raw), None
        repeat = stored.repeat(raw)
        if repeat is Repeat.SAME:
            return stored, Receipt(Outcome.DUPLICATE, raw.event_id)
        if repeat is Repeat.CONFLICT:
            stored.record_conflict(raw)
            log.warning("delivery %s repeated with another body: kept as a conflict", raw.event_id)
            return stored, Receipt(Outcome.CONFLICT, raw.event_id)
        stored.correct(raw)
        log.info("delivery %s (parked) came again with another body: processing it", raw.event_id)
        return stored, None

    def _load_batch(
        self, load_ids: Iterable[UUID], check_ids: Iterable[UUID]
    ) -> tuple[dict[UUID, Any], set[UUID]]:
        """The stored aggregates among `load_ids`, and those of `check_ids` that are stored: in
        one query when the recorder can (infrastructure/pg_recorder.py), else one per id."""
        found, existing = self._select(sorted(set(load_ids)), sorted(set(check_ids)))
        return self._fold(found), existing

    def _load_stored(self, ids: Iterable[UUID]) -> dict[UUID, Any]:
        """The stored aggregates among `ids`, in one query (the deliveries a batch repeats)."""
        return self._fold(self._select(sorted(set(ids)), [])[0])

    def _select(self, load: list[UUID], check: list[UUID]) -> tuple[list[Any], set[UUID]]:
        select_batch = getattr(self.recorder, "select_batch", None)
        if select_batch is not None:
            found, existing = select_batch(load, check)
            return found, existing
        found = [e for i in load for e in self.recorder.select_events(i)]
        return found, {i for i in check if self.recorder.select_events(i, limit=1)}

    def _fold(self, found: Iterable[Any]) -> dict[UUID, Any]:
        loaded: dict[UUID, Any] = {}
        for stored_event in found:  # by aggregate and version
            event: Any = self.mapper.to_domain_event(stored_event)
            loaded[event.originator_id] = event.mutate(loaded.get(event.originator_id))
        return loaded

    def park_delivery(self, command: ParkDelivery) -> Receipt:
        def attempt() -> Receipt:
            delivery, repeat = self._arrival(
                self._stored_delivery(command.delivery.event_id), command.delivery
            )
            if repeat is not None:
                if repeat.outcome is Outcome.CONFLICT:
                    self.save(delivery)
                return repeat
            return self._park(delivery, command.reason, fault=command.fault)

        return self._save_with_retry(command.delivery.event_id, attempt)

    def replay_delivery(self, command: ReplayDelivery) -> Receipt:
        def attempt() -> Receipt:
            delivery = self.delivery(command.event_id)
            if not delivery.is_parked:
                raise DeliveryNotParkedError(command.event_id)
            if command.fact is None:
                return self._park(delivery, command.reason or "still cannot be applied")
            return self._apply(delivery, command.fact)

        return self._save_with_retry(None, attempt)

    def _receive(self, command: RecordDelivery) -> Receipt:
        stored = self._stored_delivery(command.delivery.event_id)
        delivery, repeat = self._arrival(stored, command.delivery)
        if repeat is not None:
            if repeat.outcome is Outcome.CONFLICT:
                self.save(delivery)
            return repeat
        return self._apply(delivery, command.fact)

    def _stored_delivery(self, event_id: str) -> Delivery | None:
        try:
            return self.delivery(event_id)
        except DeliveryNotFoundError:
            return None

    def _apply(self, delivery: Delivery, fact: Fact) -> Receipt:
        prescription = self._get_or_open(delivery.subject)
        try:
            recorded = self._record_fact(prescription, fact)
        except Exception as exc:  # a fault in our own code costs a parked delivery, never data
            # The prescription's pending events are dropped.
            return self._park(delivery, describe_fault(exc), fault=True)
        delivery.mark_processed(fact_recorded=recorded)
        self.save(delivery, prescription)
        return Receipt(Outcome.ACCEPTED, delivery.event_id)

    @staticmethod
    def _record_fact(prescription: Prescription, fact: Fact) -> bool:
        """Record the fact (False: it was recorded before) and derive the state at once, so
        that a fact our code cannot handle fails here, before it is stored and breaks every
        later read of its prescription."""
        recorded = prescription.record(fact)
        prescription.state()
        return recorded

    def _park(self, delivery: Delivery, reason: str, *, fault: bool = False) -> Receipt:
        """Store the delivery parked, and log it once it is stored (every park comes here: an
        unreadable delivery, a fault in our code, a replay that still fails), at error level
        when our code is at fault."""
        delivery.park(reason)
        self.save(delivery)
        level = logging.ERROR if fault else logging.WARNING
        log.log(level, "delivery %s parked: %s", delivery.event_id, reason)
        return Receipt(Outcome.PARKED, delivery.event_id, reason)

    def _get_or_open(self, subject: str) -> Prescription:
        try:
            prescription: Prescription = self.repository.get(prescription_id(subject))
        except AggregateNotFoundError:
            return Prescription(subject)
        return prescription

    def _save_with_retry(self, event_id: str | None, attempt: Callable[[], Receipt]) -> Receipt:
        for losses in range(MAX_SAVE_ATTEMPTS):
            if losses:
                time.sleep(random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**losses)))  # noqa: S311
            try:
                receipt: Receipt = attempt()
            except IntegrityError:
                # A concurrent writer stored this delivery, or moved the prescription on: the
                # next attempt reloads both, and tells a retry from another body itself.
                continue
            return receipt
        raise ConcurrencyConflictError(event_id or "replay")

    # Queries

    def has_delivery(self, event_id: str) -> bool:
        return bool(self.recorder.select_events(delivery_id(event_id), limit=1))

    def delivery(self, event_id: str) -> Delivery:
        return self._get(Delivery, delivery_id(event_id), DeliveryNotFoundError(event_id))

    def prescription(self, subject: str) -> Prescription:
        return self._get(Prescription, prescription_id(subject), PrescriptionNotFoundError(subject))

    def _get(self, cls: type[T], aggregate_id: UUID, missing: DomainError) -> T:
        try:
            found: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise missing from None
        except OriginatorVersionError:
            raise HistoryDamagedError(missing.args[0]) from None
        assert isinstance(found, cls)
        return found

    def state(self, subject: str, as_of: datetime | None = None) -> PrescriptionState:
        """The current state, or what the facts recorded up to `as_of` said; 404 before any."""
        prescription = self.prescription(subject)
        state = prescription.state(recorded_until=as_of)
        if state.version == 0:
            raise PrescriptionNotFoundError(subject)
        return state

    def history(self, subject: str) -> list[RecordedFact]:
        return list(self.prescription(subject).recorded)
