"""The change feed's projection (its readers' side is `change_feed.py`).

`ChangesModel` writes `rx_changes` (one row per change: the contract's JSON, and the columns the
feed filters on) and `rx_change_heads` (per prescription: its last state, where its fold stands,
and which of its open requests are due for an overdue signal or were signalled). It is one more
projection: its rows and its tracking position commit in the projector's transaction, exactly
once. On PostgreSQL the same transaction NOTIFYs the feed's channel with the new head, which
PostgreSQL delivers on commit to every listening web worker, on every host (`change_hub.py`).

A change is at the position its stored event gives it (`domain.changes`), so a rebuild gives
every change the position it had. An event that a dead-letter retry applies late gets its own
(earlier) position too: a consumer that had passed it sees it after a rewind (documented in
docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain import changes as feed
from domain.delivery import Delivery
from domain.ids import prescription_id
from domain.instants import sortable_instant
from domain.names import DELIVERY_CONFLICT, DELIVERY_PARKED
from domain.prescription import History, Prescription
from domain.signals import RequestOverdue
from domain.state import OpenRequest, PrescriptionState, state_from_dict
from infrastructure.database import Cursor, ReadDatabase, in_list, insert_rows
from infrastructure.read_models import (
    Event,
    Folded,
    decode_key,
    encode_key,
    row_key,
    topics_of,
)
from infrastructure.read_tables import CHANGE_HEADS, CHANGES, ReadTable

# A delivery as it stood at one of its versions (`Prescriptions.delivery_at`).
DeliveryAt = Callable[[UUID, int], Delivery]

_JSON = {"separators": (",", ":"), "allow_nan": False}


def request_key(request: OpenRequest) -> list[str]:
    return [request.kind, request.request_id, sortable_instant(request.opened_at)]


@dataclass
class _Head(Folded):
    signalled: list[list[str]] | None = None

    def due_from(self) -> str | None:
        """The earliest opened_at of the open requests not yet signalled (None: none due)."""
        signalled = self.signalled or []
        waiting = [
            sortable_instant(r.opened_at)
            for r in self.state.open_requests
            if request_key(r) not in signalled
        ]
        return min(waiting, default=None)

    def keep_open_signalled(self) -> None:
        """Forget signals of requests no longer open (their row no longer needs them)."""
        open_keys = [request_key(r) for r in self.state.open_requests]
        self.signalled = [key for key in self.signalled or [] if key in open_keys]


class ChangesModel:
    name = "changes"
    topics = topics_of(
        Prescription.Opened,
        *Prescription.FactRecorded.__subclasses__(),
        RequestOverdue.Raised,
        Delivery.Parked,
        Delivery.ConflictReceived,
    )
    tables: tuple[ReadTable, ...] = (CHANGES, CHANGE_HEADS)

    def __init__(
        self,
        dialect: str,
        history: History,
        delivery_at: DeliveryAt,
        *,
        suffix: str = "",
        channel: str | None = None,
    ) -> None:
        self.dialect, self.history, self.delivery_at = dialect, history, delivery_at
        self.table, self.heads = CHANGES.name + suffix, CHANGE_HEADS.name + suffix
        self.channel = channel if dialect == "postgresql" else None

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        subjects = {
            event.originator_id
            for _, event in events
            if isinstance(event, Prescription.Opened | Prescription.FactRecorded)
        } | {prescription_id(e.subject) for _, e in events if isinstance(e, RequestOverdue.Raised)}
        heads = self._load(cursor, list(subjects))
        touched: set[UUID] = set()
        made: list[feed.Change] = []
        for notification_id, event in events:
            if isinstance(event, Prescription.Opened):
                heads.setdefault(event.originator_id, _Head.opened(event.subject))
                touched.add(event.originator_id)
            elif isinstance(event, Prescription.FactRecorded):
                head = heads[event.originator_id]  # its Opened came first
                before = head.state
                fact = head.fold(event, self.history)
                head.keep_open_signalled()
                made += feed.fact_changes(
                    notification_id, event.timestamp, fact, before, head.state
                )
                touched.add(event.originator_id)
            elif isinstance(event, RequestOverdue.Raised):
                key = prescription_id(event.subject)
                head = heads.setdefault(key, _Head.opened(event.subject))
                request = OpenRequest(event.kind, event.request_id, event.opened_at)
                head.signalled = [*(head.signalled or []), request_key(request)]
                made.append(
                    feed.overdue_change(notification_id, event.timestamp, request, head.state)
                )
                touched.add(key)
            else:
                made.append(self._delivery_change(notification_id, event))
        self._write(cursor, made, {key: heads[key] for key in touched})

    def _delivery_change(self, notification_id: int, event: Any) -> feed.Change:
        delivery = self.delivery_at(event.originator_id, event.originator_version)
        parked = isinstance(event, Delivery.Parked)
        return feed.delivery_change(
            notification_id,
            event.timestamp,
            DELIVERY_PARKED if parked else DELIVERY_CONFLICT,
            event_id=delivery.event_id,
            drx_type=delivery.drx_type,
            subject=delivery.subject,
            reason=event.reason if parked else None,
        )

    def _write(self, cursor: Cursor, made: list[feed.Change], heads: dict[UUID, _Head]) -> None:
        insert_rows(
            cursor,
            self.dialect,
            CHANGES.insert(self.table),
            CHANGES.types,
            [
                (
                    change.position,
                    change.type,
                    row_key(self.dialect, prescription_id(change.prescription_id)),
                    change.prescription_id,
                    change.patient_id,
                    change.status,
                    sortable_instant(change.recorded_at),
                    json.dumps(change.as_dict(), **_JSON),  # type: ignore[arg-type]
                )
                for change in made
            ],
        )
        insert_rows(
            cursor,
            self.dialect,
            CHANGE_HEADS.insert(self.heads),
            CHANGE_HEADS.types,
            [
                (
                    row_key(self.dialect, key),
                    head.subject,
                    json.dumps(head.state.as_dict(), **_JSON),  # type: ignore[arg-type]
                    encode_key(head.last) if head.last else "{}",
                    json.dumps(head.signalled or []),
                    head.due_from(),
                )
                for key, head in heads.items()
            ],
            CHANGE_HEADS.on_conflict_update(CHANGE_HEADS.names[2:]),
        )
        if made and self.channel:
            # Delivered when this transaction commits, to every session listening.
            cursor.execute("SELECT pg_notify(%s, %s)", (self.channel, str(made[-1].position)))

    def _load(self, cursor: Cursor, ids: list[UUID]) -> dict[UUID, _Head]:
        if not ids:
            return {}
        where, params = in_list(
            self.dialect, "aggregate_id", [row_key(self.dialect, i) for i in ids]
        )
        cursor.execute(
            "SELECT aggregate_id, prescription_id, state, fold, signalled"  # noqa: S608
            f" FROM {self.heads} WHERE {where}",
            params,
        )
        return {
            UUID(str(aggregate_id)): _Head(
                subject,
                state_from_dict(json.loads(state)),
                decode_key(fold),
                signalled=json.loads(signalled),
            )
            for aggregate_id, subject, state, fold, signalled in cursor.fetchall()
        }


@dataclass(frozen=True)
class DueHead:
    subject: str
    state: PrescriptionState
    signalled: list[list[str]]


class ChangeHeads:
    """What the overdue watch asks of `rx_change_heads`."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def due(self, opened_before: datetime, limit: int = 100) -> list[DueHead]:
        """Prescriptions with an open, unsignalled request opened before the instant."""
        rows = self.db.query(
            f"SELECT prescription_id, state, signalled FROM {CHANGE_HEADS.name}"  # noqa: S608
            " WHERE due_from <= %s ORDER BY due_from LIMIT %s",
            (sortable_instant(opened_before), limit),
        )
        return [
            DueHead(subject, state_from_dict(json.loads(state)), json.loads(signalled))
            for subject, state, signalled in rows
        ]
