"""The read models the projector keeps: `rx_prescriptions` (one row per prescription: its
state as the API's JSON, the columns the list filters on, and its facts, so that a new fact
re-derives the state without reading the store) and `rx_deliveries` (one row per stored
delivery, in arrival order, with its outcome). Each applies a batch of stored events to its
table in as few statements as it can (on PostgreSQL, one per table and batch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.delivery import CONFLICT, PARKED, PROCESSED, Delivery, shown_status
from domain.facts import Fact, FactKind
from domain.instants import sortable_instant
from domain.prescription import Prescription
from domain.state import derive_state
from infrastructure.database import Cursor, insert_rows
from infrastructure.read_tables import DELIVERIES, PRESCRIPTIONS

Event = tuple[int, DomainEventProtocol[Any]]


class ReadModel(Protocol):
    """A table kept from the events of some topics; `apply` writes a batch of them."""

    name: str
    topics: tuple[str, ...]

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None: ...


def row_key(dialect: str, aggregate_id: UUID) -> Any:
    """An aggregate id as the read tables hold it (uuid on PostgreSQL, text on SQLite)."""
    return aggregate_id if dialect == "postgresql" else str(aggregate_id)


def _in_list(dialect: str, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    if dialect == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def _topics(*classes: type) -> tuple[str, ...]:
    return tuple(get_topic(cls) for cls in classes)


def encode_facts(facts: Iterable[tuple[Fact, datetime]]) -> str:
    return json.dumps(
        [
            [
                f.event_id,
                f.kind.value,
                f.occurred_at.isoformat(),
                f.sequence,
                f.document,
                f.correlation,
                recorded_at.isoformat(),
            ]
            for f, recorded_at in facts
        ],
        separators=(",", ":"),
        allow_nan=False,
    )


def decode_facts(text: str) -> list[tuple[Fact, datetime]]:
    return [
        (
            Fact.read(
                event_id,
                FactKind(kind),
                datetime.fromisoformat(occurred_at),
                sequence,
                document,
                correlation,
            ),
            datetime.fromisoformat(recorded_at),
        )
        for event_id, kind, occurred_at, sequence, document, correlation, recorded_at in json.loads(
            text
        )
    ]


@dataclass
class _Entry:
    subject: str
    facts: list[tuple[Fact, datetime]] = field(default_factory=list)


class PrescriptionsModel:
    """`rx_prescriptions`: one row per prescription with its state, the columns the list filters
    on, and its facts (so that a new fact re-derives the state without reading the store)."""

    name = "prescriptions"
    topics = _topics(Prescription.Opened, *Prescription.FactRecorded.__subclasses__())

    def __init__(self, dialect: str, table: str = PRESCRIPTIONS.name) -> None:
        self.dialect, self.table = dialect, table

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        ids = list({event.originator_id for _, event in events})
        entries = self._load(cursor, ids)
        # Every entry is one the batch touches: the rows were loaded for the batch's ids.
        for _, event in events:
            if isinstance(event, Prescription.Opened):
                entries.setdefault(event.originator_id, _Entry(event.subject))
            elif isinstance(event, Prescription.FactRecorded):
                # Its Opened event always comes first, in this batch or an earlier one.
                entries[event.originator_id].facts.append((event.to_fact(), event.timestamp))
        insert_rows(
            cursor,
            self.dialect,
            PRESCRIPTIONS.insert(self.table),
            PRESCRIPTIONS.types,
            [self._row(aggregate_id, entry) for aggregate_id, entry in entries.items()],
            PRESCRIPTIONS.on_conflict_update(PRESCRIPTIONS.names[2:]),
        )

    def _load(self, cursor: Cursor, ids: list[UUID]) -> dict[UUID, _Entry]:
        if not ids:
            return {}
        keys = [row_key(self.dialect, i) for i in ids]
        where, params = _in_list(self.dialect, "aggregate_id", keys)
        cursor.execute(
            f"SELECT aggregate_id, prescription_id, facts FROM {self.table} WHERE {where}",
            params,
        )
        return {
            UUID(str(aggregate_id)): _Entry(subject, decode_facts(facts))
            for aggregate_id, subject, facts in cursor.fetchall()
        }

    def _row(self, aggregate_id: UUID, entry: _Entry) -> tuple[Any, ...]:
        state = derive_state(entry.subject, [f for f, _ in entry.facts])
        updated = max((at for _, at in entry.facts), default=datetime(1970, 1, 1, tzinfo=UTC))
        return (
            row_key(self.dialect, aggregate_id),
            entry.subject,
            state.status,
            state.patient.drx_patient_id if state.patient else None,
            state.pharmacy.ncpdp_id if state.pharmacy else None,
            state.needs_review,
            sortable_instant(updated),
            # RFC 8259 JSON only: a state that would hold NaN or Infinity fails here, and its
            # event is set aside, instead of making every list page that holds it unparseable.
            json.dumps(state.as_dict(), separators=(",", ":"), allow_nan=False),
            encode_facts(entry.facts),
        )


class DeliveriesModel:
    """`rx_deliveries`: one row per stored delivery, in arrival order, with its outcome and how
    many conflicting copies came since."""

    name = "deliveries"
    topics = _topics(
        Delivery.Received,
        Delivery.Processed,
        Delivery.Parked,
        Delivery.Corrected,
        Delivery.ConflictReceived,
    )

    def __init__(self, dialect: str, table: str = DELIVERIES.name) -> None:
        self.dialect, self.table = dialect, table

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        """Folded in memory into whole rows, then written in one upsert: a delivery received
        and processed in one batch (most are) is one row of it; a delivery from an earlier
        batch (a replay, a correction, a conflicting copy) is read first."""
        rows: dict[Any, dict[str, Any]] = {}
        later = {
            row_key(self.dialect, e.originator_id)
            for _, e in events
            if not isinstance(e, Delivery.Received)
        }
        rows.update(self._load(cursor, later))
        for notification_id, event in events:
            key = row_key(self.dialect, event.originator_id)
            if isinstance(event, Delivery.Received):
                rows[key] = {
                    "aggregate_id": key,
                    "event_id": event.event_id,
                    "seq": notification_id,
                    "type": event.drx_type,
                    "subject": event.subject,
                    "received_at": sortable_instant(event.timestamp),
                    "outcome": None,
                    "reason": None,
                    "conflicts": 0,
                }
                continue
            row = rows[key]  # its Received came first, in this batch or an earlier one
            if isinstance(event, Delivery.Parked):
                row["outcome"], row["reason"] = PARKED, event.reason
            elif isinstance(event, Delivery.Processed):
                row["outcome"], row["reason"] = PROCESSED, None
            elif isinstance(event, Delivery.Corrected):
                row["type"], row["subject"], row["outcome"] = event.drx_type, event.subject, None
            elif isinstance(event, Delivery.ConflictReceived):
                row["conflicts"] += 1
        written = [
            [
                *(row[name] for name in DELIVERIES.names[:6]),
                shown_status(row["outcome"], row["conflicts"]) or "received",
                row["reason"],
                row["conflicts"],
            ]
            for row in rows.values()
        ]
        insert_rows(
            cursor,
            self.dialect,
            DELIVERIES.insert(self.table),
            DELIVERIES.types,
            written,
            # A row keeps its place (seq) and its arrival time; the rest follows its events.
            DELIVERIES.on_conflict_update(("type", "subject", "status", "reason", "conflicts")),
        )

    def _load(self, cursor: Cursor, keys: set[Any]) -> dict[Any, dict[str, Any]]:
        if not keys:
            return {}
        where, params = _in_list(self.dialect, "aggregate_id", list(keys))
        cursor.execute(
            f"SELECT {', '.join(DELIVERIES.names)} FROM {self.table} WHERE {where}",
            params,
        )
        loaded = {}
        for values in cursor.fetchall():
            row = dict(zip(DELIVERIES.names, values, strict=True))
            status = row.pop("status")
            row["outcome"] = {"received": None, CONFLICT: PROCESSED}.get(status, status)
            row["aggregate_id"] = row_key(self.dialect, UUID(str(row["aggregate_id"])))
            loaded[row["aggregate_id"]] = row
        return loaded
