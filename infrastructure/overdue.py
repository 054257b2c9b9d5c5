"""The overdue watch: raises `prescription.request_overdue` for each change, cancel or renewal
request still open `DRX_REQUEST_SLA` after it was opened. It runs where the projections run
(the projector calls `check` after each catch-up, so one process per database does it), reads
the candidates from the change feed's heads (`rx_change_heads.due_from`, indexed), checks each
against the store, and records the signal as an event (`domain.signals.raise_overdue`): once per
request, whatever restarts, standbys or rebuilds do. Time comes from the clock it is given.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from domain.application import Prescriptions
from domain.clock import Clock
from domain.signals import overdue, raise_overdue
from infrastructure.change_projection import ChangeHeads, request_key

log = logging.getLogger(__name__)


class OverdueWatch:
    def __init__(
        self,
        app: Prescriptions,
        heads: ChangeHeads,
        sla_s: float,
        clock: Clock,
        *,
        interval_s: float = 1.0,
        batch: int = 100,
    ) -> None:
        self.app, self.heads, self.clock = app, heads, clock
        self.sla = timedelta(seconds=sla_s)
        self.interval_s, self.batch = interval_s, batch
        self._next_check = 0.0
        # Signals raised (or found answered) that the feed has not projected yet: not asked
        # about again until the feed's heads show them.
        self._pending: set[tuple[str, tuple[str, ...]]] = set()

    def check(self, *, force: bool = False) -> int:
        """Raise every signal now due; the number raised. At most once per `interval_s`."""
        if not force and time.monotonic() < self._next_check:
            return 0
        self._next_check = time.monotonic() + self.interval_s
        now = self.clock.now()
        raised, seen = 0, set()
        for head in self.heads.due(now - self.sla, self.batch):
            for request in overdue(head.state.open_requests, now, self.sla):
                key = (head.subject, tuple(request_key(request)))
                if list(key[1]) in head.signalled:
                    continue
                seen.add(key)
                if key in self._pending:
                    continue
                self._pending.add(key)
                try:
                    if raise_overdue(self.app, head.subject, request, self.sla):
                        raised += 1
                except Exception as exc:  # this prescription's; the others go on
                    log.warning(
                        "an overdue signal could not be raised (%s): tried again later",
                        type(exc).__name__,
                    )
                    self._pending.discard(key)
        self._pending &= seen
        if raised:
            log.info("%d request(s) overdue: signalled on the change feed", raised)
        return raised
