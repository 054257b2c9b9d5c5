"""Workflow signals: what the service derives from a prescription's facts and the time, beside
the facts themselves: an anomaly that appeared, a request left open past the SLA. Time enters
through one `Clock` (`domain.clock`), so that tests drive it.

A request's overdue signal is stored as an aggregate of its own (`RequestOverdue`), keyed by the
request (prescription, kind, request id, opened at): a second attempt to raise it collides on
create, so each overdue request is signalled exactly once, whatever restarts or standbys do;
and the change feed projects it from the store like a fact, so a rebuild finds it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from domain.ids import overdue_signal_id, prescription_id
from domain.prescription import Prescription
from domain.state import Anomaly, OpenRequest, PrescriptionState


def new_anomalies(before: PrescriptionState, after: PrescriptionState) -> list[Anomaly]:
    """The anomalies a fact added (those in `after` and not in `before`), in `after`'s order."""
    known = set(before.anomalies)
    return [anomaly for anomaly in after.anomalies if anomaly not in known]


def overdue(requests: Iterable[OpenRequest], now: datetime, sla: timedelta) -> list[OpenRequest]:
    """The requests open for longer than `sla` at `now`, counted from when DRx says they were
    opened (their `opened_at`, the request fact's occurred_at)."""
    return [request for request in requests if request.opened_at + sla <= now]


class RequestOverdue(Aggregate):
    """A change, cancel or renewal request found still open past the SLA: signalled once."""

    @staticmethod
    def create_id(subject: str, kind: str, request_id: str, opened_at: datetime) -> UUID:
        return overdue_signal_id(subject, kind, request_id, opened_at)

    class Raised(Aggregate.Created):
        subject: str
        kind: str
        request_id: str
        opened_at: datetime
        sla_seconds: float

    @event(Raised)
    def __init__(
        self, subject: str, kind: str, request_id: str, opened_at: datetime, sla_seconds: float
    ) -> None:
        self.subject, self.kind, self.request_id = subject, kind, request_id
        self.opened_at, self.sla_seconds = opened_at, sla_seconds

    @property
    def request(self) -> OpenRequest:
        return OpenRequest(self.kind, self.request_id, self.opened_at)


def raise_overdue(
    app: Application[Any], subject: str, request: OpenRequest, sla: timedelta
) -> bool:
    """Record the request's overdue signal if the store still has the request open. False when
    it was answered meanwhile, or was signalled before (the signal's id collides)."""
    try:
        prescription: object = app.repository.get(prescription_id(subject))
    except AggregateNotFoundError:
        return False
    assert isinstance(prescription, Prescription)
    if request not in prescription.state().open_requests:
        return False
    signal = RequestOverdue(
        subject, request.kind, request.request_id, request.opened_at, sla.total_seconds()
    )
    try:
        app.save(signal)
    except IntegrityError:
        return False
    return True
