"""The change feed's projection and its queries.

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
from functools import cached_property
from typing import Any
from uuid import UUID

from domain import changes as feed
from domain.delivery import Delivery
from domain.ids import prescription_id
from domain.instants import sortable_instant
from domain.prescription import History, Prescription
from domain.signals import RequestOverdue
from domain.state import OpenRequest, PrescriptionState, state_from_dict
from infrastructure.database import Cursor, ReadDatabase, insert_rows
from infrastructure.read_models import (
    Event,
    Folded,
    decode_key,
    encode_key,
    in_list,
    row_key,
    topics_of,
)
from infrastructure.read_tables import CHANGE_HEADS, CHANGES, ReadTable

# A delivery as it stood at one of its versions (`Prescriptions.delivery_at`).
DeliveryAt = Callable[[UUID, int], Delivery]

_JSON = {"separators": (",", ":"), "allow_nan": False}


def channel_for(schema: str) -> str:
    """The NOTIFY channel of the feed in one schema (several services may share a database)."""
    return "drx_changes_" + "".join(c if c.isalnum() else "_" for c in schema.lower())[:40]


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
            feed.DELIVERY_PARKED if parked else feed.DELIVERY_CONFLICT,
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
class ChangeFilter:
    prescription_id: str | None = None
    patient_id: str | None = None
    types: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()

    def matches(self, row: FeedRow) -> bool:
        return (
            (self.prescription_id is None or row.prescription_id == self.prescription_id)
            and (self.patient_id is None or row.patient_id == self.patient_id)
            and (not self.types or row.type in self.types)
            and (not self.statuses or row.status in self.statuses)
        )


@dataclass(frozen=True)
class FeedRow:
    position: int
    type: str
    prescription_id: str
    patient_id: str | None
    status: str | None
    recorded_at: str  # RFC 3339, fixed width
    document: str  # the change's JSON, as stored

    @cached_property
    def sse(self) -> bytes:
        """The change as one Server-Sent Events message, encoded once for every stream that
        sends it (the JSON holds no line break: it is one data line)."""
        return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (
            self.position,
            self.type.encode(),
            self.document.encode(),
        )


@dataclass(frozen=True)
class DueHead:
    subject: str
    state: PrescriptionState
    signalled: list[list[str]]


class ChangeFeed:
    """What the feed's readers ask of `rx_changes` (the API, the streams, the dispatcher)."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def head(self) -> int:
        """The last position written (0 for an empty feed)."""
        rows = self.db.query(f"SELECT MAX(position) FROM {CHANGES.name}")  # noqa: S608
        return int(rows[0][0] or 0) if rows else 0

    def after(
        self, position: int, limit: int, where: ChangeFilter = ChangeFilter()
    ) -> list[FeedRow]:
        """Up to `limit` changes after `position` that match, in position order."""
        clauses, params = self._where(position, where)
        rows = self.db.query(
            "SELECT position, type, prescription_id, patient_id, status, recorded_at, document"  # noqa: S608
            f" FROM {CHANGES.name} WHERE {' AND '.join(clauses)} ORDER BY position LIMIT %s",
            (*params, limit),
        )
        return [FeedRow(int(p), *rest) for p, *rest in rows]

    def count_after(self, position: int, where: ChangeFilter, cap: int) -> int:
        """How many changes after `position` match (up to `cap`)."""
        clauses, params = self._where(position, where)
        rows = self.db.query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {CHANGES.name}"  # noqa: S608
            f" WHERE {' AND '.join(clauses)} LIMIT %s) AS counted",
            (*params, cap),
        )
        return int(rows[0][0]) if rows else 0

    def _where(self, position: int, where: ChangeFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = ["position > %s"]
        params: list[Any] = [position]
        for column in ("prescription_id", "patient_id"):
            value = getattr(where, column)
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        for column, values in (("type", where.types), ("status", where.statuses)):
            if values:
                clause, more = in_list(self.db.dialect, column, list(values))
                clauses.append(clause)
                params.extend(more)
        return clauses, params

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
