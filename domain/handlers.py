"""The command handlers: each gets the aggregates from the unit of work, calls them, and hands
them back to be saved. Whether one command or a batch shares the transaction is the unit of
work's business (`domain.unit_of_work`), not theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from eventsourcing.persistence import PersistenceError

from domain.commands import ParkDelivery, RecordDelivery, ReplayDelivery
from domain.delivery import Delivery, RawDelivery, Repeat
from domain.errors import DeliveryNotFoundError, DeliveryNotParkedError, describe_fault
from domain.facts import Fact
from domain.prescription import Prescription

log = logging.getLogger(__name__)

Command = RecordDelivery | ParkDelivery | ReplayDelivery


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
    fault: bool = False  # parked because our own code failed on it (logged as an error)


class Aggregates(Protocol):
    """What a handler asks of its unit of work."""

    def prescription(self, subject: str) -> Prescription:
        """The stored prescription, or a new one (contract 4.8: a fact is never refused)."""

    def delivery(self, event_id: str) -> Delivery | None: ...

    def add(self, *aggregates: Prescription | Delivery) -> None:
        """To be saved when the unit of work commits."""

    def report(self, body: str) -> str:
        """What a delivery's body reports (`domain.delivery.Report`)."""


def record_delivery(work: Aggregates, command: RecordDelivery) -> Receipt:
    delivery, repeat = _arrival(work, command.delivery)
    if repeat is not None:
        return repeat
    return _record_fact(work, delivery, command.fact)


def park_delivery(work: Aggregates, command: ParkDelivery) -> Receipt:
    delivery, repeat = _arrival(work, command.delivery)
    if repeat is not None:
        return repeat
    return _park(work, delivery, command.reason, fault=command.fault)


def replay_delivery(work: Aggregates, command: ReplayDelivery) -> Receipt:
    delivery = work.delivery(command.event_id)
    if delivery is None:
        raise DeliveryNotFoundError(command.event_id)
    if not delivery.is_parked:
        raise DeliveryNotParkedError(command.event_id)
    if command.fact is None:
        return _park(work, delivery, command.reason or "still cannot be applied")
    return _record_fact(work, delivery, command.fact)


def handle(work: Aggregates, command: Command) -> Receipt:
    if isinstance(command, RecordDelivery):
        return record_delivery(work, command)
    if isinstance(command, ParkDelivery):
        return park_delivery(work, command)
    return replay_delivery(work, command)


def _arrival(work: Aggregates, raw: RawDelivery) -> tuple[Delivery, Receipt | None]:
    """The delivery to go on with, and the receipt when there is nothing more to do: a new
    delivery, or a correction of a parked one, goes on (to its fact, or to be parked); a
    retry is a duplicate; another body for a processed one is kept as a conflict."""
    stored = work.delivery(raw.event_id)
    if stored is None:
        return Delivery.receive(raw), None
    repeat = stored.repeat(raw, work.report)
    if repeat is Repeat.SAME:
        return stored, Receipt(Outcome.DUPLICATE, raw.event_id)
    if repeat is Repeat.CONFLICT:
        stored.record_conflict(raw)
        work.add(stored)
        log.warning("delivery %s repeated with another body: kept as a conflict", raw.event_id)
        return stored, Receipt(Outcome.CONFLICT, raw.event_id)
    stored.correct(raw)
    log.info("delivery %s (parked) came again with another body: processing it", raw.event_id)
    return stored, None


def _record_fact(work: Aggregates, delivery: Delivery, fact: Fact) -> Receipt:
    prescription = work.prescription(delivery.subject)
    try:
        prescription.record(fact)  # a DRx id is one delivery: a repeat never gets this far
    except PersistenceError:
        raise  # the store failed (a late fact reads the stored ones): 503, and DRx retries
    except Exception as exc:  # a fault in our own code costs a parked delivery, never data
        return _park(work, delivery, describe_fault(exc), fault=True)
    delivery.mark_processed(fact_recorded=True)
    work.add(delivery, prescription)
    return Receipt(Outcome.ACCEPTED, delivery.event_id)


def _park(work: Aggregates, delivery: Delivery, reason: str, *, fault: bool = False) -> Receipt:
    """Park the delivery with `reason`. A replay that parks it again for the reason it is
    already parked for records nothing: the stored history says each thing once, however many
    times an operator retries (the receipt still says parked, and why)."""
    if not (delivery.is_parked and delivery.reason == reason and not delivery.pending_events):
        delivery.park(reason)
        work.add(delivery)
    return Receipt(Outcome.PARKED, delivery.event_id, reason, fault)
