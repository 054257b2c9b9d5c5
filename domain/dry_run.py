"""What replaying parked deliveries would do, computed without saving anything.

`dry_run_replays` hands each replay to the same handler a replay goes through
(`domain.handlers.handle`), in one unit of work that is never committed: the aggregates change
in memory only, and are dropped with it. The replays follow each other in that unit of work, as
they would when replayed in turn, so a second delivery of one prescription sees the first's
fact. Each preview says whether the delivery would be processed or parked again (and why), and
the prescription's state before and after; `state_changes` names what would differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from domain.commands import ReplayDelivery
from domain.errors import DeliveryNotFoundError, DeliveryNotParkedError
from domain.handlers import Aggregates, Outcome, handle
from domain.state import PrescriptionState

PROCESSED = "processed"
PARKED_AGAIN = "parked"
NOT_REPLAYABLE = "not replayable"  # gone, or no longer parked (replayed meanwhile)


@dataclass(frozen=True)
class ReplayPreview:
    event_id: str
    outcome: str  # PROCESSED, PARKED_AGAIN or NOT_REPLAYABLE
    reason: str | None = None  # why it would be parked again, or cannot be replayed
    subject: str | None = None
    before: PrescriptionState | None = None
    after: PrescriptionState | None = None


@dataclass(frozen=True)
class StateChange:
    field: str
    before: Any
    after: Any


def dry_run_replays(work: Aggregates, commands: Iterable[ReplayDelivery]) -> list[ReplayPreview]:
    """Each replay's preview, in order, over `work` (which the caller must never commit)."""
    previews = []
    for command in commands:
        delivery = work.delivery(command.event_id)
        subject = delivery.subject if delivery is not None else None
        before = work.prescription(subject).state() if subject is not None else None
        try:
            receipt = handle(work, command)
        except DeliveryNotParkedError:
            previews.append(ReplayPreview(command.event_id, NOT_REPLAYABLE, "not parked", subject))
            continue
        except DeliveryNotFoundError:
            previews.append(ReplayPreview(command.event_id, NOT_REPLAYABLE, "no such delivery"))
            continue
        assert subject is not None  # the handler found the delivery
        after = work.prescription(subject).state()
        outcome = PROCESSED if receipt.outcome is Outcome.ACCEPTED else PARKED_AGAIN
        previews.append(
            ReplayPreview(command.event_id, outcome, receipt.reason, subject, before, after)
        )
    return previews


def state_changes(before: PrescriptionState, after: PrescriptionState) -> list[StateChange]:
    """The fields of the state's JSON shape that differ, in the shape's order."""
    old, new = before.as_dict(), after.as_dict()
    return [StateChange(name, old[name], new[name]) for name in new if old[name] != new[name]]
