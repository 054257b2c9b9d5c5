"""The one clock time enters the service by (signals, the dispatcher's retries, checkpoints), so
that tests drive it; a module of its own, importing nothing of the domain's models, for the
processes that need a clock and not the models (the dispatcher's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, with its UTC offset."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class DrivenClock:
    """A clock that moves only when told to (tests, simulations)."""

    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> None:
        self.at += by
