"""Replaying parked deliveries, and the dry run of a replay: the one place a stored delivery
becomes a replay command (its current body read again with the translator deployed now), for the
API's replay, the console's, and the console's dry run."""

from __future__ import annotations

from collections.abc import Sequence

from domain.commands import ReplayDelivery
from domain.delivery import Delivery
from domain.dry_run import ReplayPreview
from domain.facts import Fact
from domain.handlers import Receipt
from interfaces.bootstrap import Parts
from interfaces.drx.translator import read_stored


def replay_of(delivery: Delivery) -> ReplayDelivery:
    """The replay of a stored delivery: its current body, read again."""
    read = read_stored(delivery.body)
    if isinstance(read, Fact):
        return ReplayDelivery(delivery.event_id, read)
    return ReplayDelivery(delivery.event_id, None, read.reason)


def replay(parts: Parts, event_id: str) -> Receipt:
    """Replay one parked delivery (DeliveryNotFoundError, DeliveryNotParkedError), saved; the
    projector is woken to show it soon."""
    receipt = parts.intake.take(replay_of(parts.prescriptions.delivery(event_id)))
    parts.projector.wake()
    return receipt


def dry_run(parts: Parts, event_ids: Sequence[str]) -> list[ReplayPreview]:
    """What replaying these deliveries in turn would do; nothing is saved."""
    return parts.intake.dry_run(event_ids, replay_of)
