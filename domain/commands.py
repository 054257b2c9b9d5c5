"""Commands the prescription service handles: small frozen requests with imperative names."""

from __future__ import annotations

from dataclasses import dataclass

from domain.delivery import RawDelivery
from domain.facts import Fact


@dataclass(frozen=True)
class RecordDelivery:
    """Keep the delivery and record its fact on the prescription, in one transaction."""

    delivery: RawDelivery
    fact: Fact


@dataclass(frozen=True)
class ParkDelivery:
    """Keep a delivery that cannot be applied, with the reason, so it can be replayed later."""

    delivery: RawDelivery
    reason: str
    fault: bool = False  # our own code failed on it (logged as an error), not DRx's data


@dataclass(frozen=True)
class ReplayDelivery:
    """Apply a parked delivery again: with its fact once it can be read, else park it anew."""

    event_id: str
    fact: Fact | None
    reason: str | None = None
