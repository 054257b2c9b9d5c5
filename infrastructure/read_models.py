"""The read models the projector keeps: `rx_prescriptions` (one row per prescription: its
state as the API's JSON, the columns the list filters on, and its facts, so that a new fact
re-derives the state without reading the store) and `rx_deliveries` (one row per stored
delivery, in arrival order, with its outcome). Each applies a batch of stored events to its
table in as few statements as it can (on PostgreSQL, one per table and batch). Both are
`AggregateRows`: each row is the fold of one aggregate's own events, which a rebuild takes apart
(`load`, `fold`, `row`, `write`) to fold many batches in memory and write each row once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, Self, runtime_checkable
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.delivery import CONFLICT, PARKED, PROCESSED, Delivery, shown_status
from domain.facts import Fact
from domain.instants import sortable_instant

# `History`: the read model's way back to the store, for a fact that comes late; `Key`: a
# fact's place in contract order, as the fold column keeps it (both the aggregate's too).
from domain.prescription import History, Key, Prescription
from domain.state import PrescriptionState, derive_state, extend_state, state_from_dict
from infrastructure.database import Cursor, in_list, insert_rows
from infrastructure.read_tables import DELIVERIES, PRESCRIPTIONS, ReadTable

Event = tuple[int, DomainEventProtocol[Any]]


class ReadModel(Protocol):
    """A table kept from the events of some topics; `apply` writes a batch of them."""

    name: str
    topics: tuple[str, ...]
    tables: tuple[ReadTable, ...]  # what it writes (a rebuild fills fresh copies of them)

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None: ...


@runtime_checkable
class AggregateRows(ReadModel, Protocol):
    """A read model of one row per aggregate, each the fold of that aggregate's own events, in
    their order; `apply` is `load`, `fold` and `write`. So a rebuild may fold the events of any
    share of the aggregates apart from the others (in another process), over many batches in
    memory, and write each row once (`infrastructure/rebuild.py`)."""

    table: str  # the table its rows go to (a fresh copy of `tables[0]`, in a rebuild)

    def load(self, cursor: Cursor, ids: Collection[UUID]) -> dict[UUID, Any]:
        """The entries (what `fold` folds into) of those of the aggregates that have a row."""
        ...

    def fold(self, entries: dict[UUID, Any], events: Sequence[Event]) -> None:
        """Fold the events into their aggregates' entries: `entries` holds the entry of each
        of their aggregates that has one; those that begin here are added."""
        ...

    def row(self, aggregate_id: UUID, entry: Any) -> tuple[Any, ...]:
        """An entry as its row of `tables[0]`, in its columns' order."""
        ...

    def write(self, cursor: Cursor, rows: Sequence[Sequence[Any]]) -> None:
        """Insert the rows, or update those that are there (one statement on PostgreSQL)."""
        ...


def row_key(dialect: str, aggregate_id: UUID) -> Any:
    """An aggregate id as the read tables hold it (uuid on PostgreSQL, text on SQLite)."""
    return aggregate_id if dialect == "postgresql" else str(aggregate_id)


def topics_of(*classes: type) -> tuple[str, ...]:
    return tuple(get_topic(cls) for cls in classes)


def encode_key(key: Key) -> str:
    occurred_at, sequence, rank, event_id = key
    return json.dumps({"last": [occurred_at.isoformat(), sequence, rank, event_id]})


def decode_key(text: str) -> Key | None:
    """Where a row's fold stands; None for a row that has not folded a fact yet, or that was
    written before the fold existed (it held the facts: its state is derived again once)."""
    found = json.loads(text)
    if not isinstance(found, dict) or not found.get("last"):
        return None
    occurred_at, sequence, rank, event_id = found["last"]
    return datetime.fromisoformat(occurred_at), sequence, rank, event_id


@dataclass
class Folded:
    """A prescription's state as a read model keeps it, and where its fold stands."""

    subject: str
    state: PrescriptionState
    last: Key | None
    updated_at: str = ""  # when its last fact was recorded, as the table held it
    # The latest recorded time folded since (formatted once, by `updated`, not at every fact).
    recorded: datetime | None = None

    def updated(self) -> str:
        """When its last fact was recorded, as the table keeps it (text that sorts as it
        compares, so the later of the two texts is the text of the later instant)."""
        if self.recorded is None:
            return self.updated_at
        return max(self.updated_at, sortable_instant(self.recorded))

    @classmethod
    def opened(cls, subject: str) -> Self:
        return cls(subject, derive_state(subject, []), None)

    def fold(self, event: Prescription.FactRecorded, history: History) -> Fact:
        """Take the event's fact into the state: a fact that orders after the last one folded
        extends the state (`extend_state`), so its cost does not grow with the prescription's
        history; one that orders before it (a late one: DRx's deliveries are unordered) has
        the state derived again from the prescription's facts in the store, up to that fact's
        version, so that the state stays the pure function of all its facts."""
        fact = event.to_fact()
        key = fact.order_key()
        if (self.last is not None and key > self.last) or (
            self.last is None and self.state.version == 0  # the first fact
        ):
            self.state = extend_state(self.state, fact)
        else:  # a late fact, or a row written before the fold: derive it all again
            facts = history(event.originator_id, event.originator_version)
            self.state = derive_state(self.subject, facts)
            key = max(f.order_key() for f in facts)
        self.last = key if self.last is None else max(self.last, key)
        if self.recorded is None or event.timestamp > self.recorded:
            self.recorded = event.timestamp
        return fact


class PrescriptionsModel:
    """`rx_prescriptions`: one row per prescription with its state (as the API's JSON), the
    columns the list filters on, and where the state's fold stands (`Folded.fold`: the state
    stays the pure function of all its facts, in any arrival order, tests/unit/test_state.py).
    """

    name = "prescriptions"
    topics = topics_of(Prescription.Opened, *Prescription.FactRecorded.__subclasses__())

    tables: tuple[ReadTable, ...] = (PRESCRIPTIONS,)

    def __init__(self, dialect: str, history: History, *, suffix: str = "") -> None:
        self.dialect, self.history, self.table = dialect, history, PRESCRIPTIONS.name + suffix

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        entries = self.load(cursor, {event.originator_id for _, event in events})
        self.fold(entries, events)
        # Every entry is one the batch touches: the rows were loaded for the batch's ids.
        self.write(cursor, [self.row(key, entry) for key, entry in entries.items()])

    def fold(self, entries: dict[UUID, Folded], events: Sequence[Event]) -> None:
        for _, event in events:
            if isinstance(event, Prescription.Opened):
                entries.setdefault(event.originator_id, Folded.opened(event.subject))
            elif isinstance(event, Prescription.FactRecorded):
                # Its Opened event always comes first, in this batch or an earlier one.
                entries[event.originator_id].fold(event, self.history)

    def write(self, cursor: Cursor, rows: Sequence[Sequence[Any]]) -> None:
        insert_rows(
            cursor,
            self.dialect,
            PRESCRIPTIONS.insert(self.table),
            PRESCRIPTIONS.types,
            rows,
            PRESCRIPTIONS.on_conflict_update(PRESCRIPTIONS.names[2:]),
        )

    def load(self, cursor: Cursor, ids: Collection[UUID]) -> dict[UUID, Folded]:
        if not ids:
            return {}
        keys = [row_key(self.dialect, i) for i in ids]
        where, params = in_list(self.dialect, "aggregate_id", keys)
        cursor.execute(
            "SELECT aggregate_id, prescription_id, state, fold, updated_at"
            f" FROM {self.table} WHERE {where}",
            params,
        )
        return {
            UUID(str(aggregate_id)): Folded(
                subject, state_from_dict(json.loads(state)), decode_key(fold), updated_at
            )
            for aggregate_id, subject, state, fold, updated_at in cursor.fetchall()
        }

    def row(self, aggregate_id: UUID, entry: Folded) -> tuple[Any, ...]:
        state = entry.state
        return (
            row_key(self.dialect, aggregate_id),
            entry.subject,
            state.status,
            state.patient.drx_patient_id if state.patient else None,
            state.pharmacy.ncpdp_id if state.pharmacy else None,
            state.needs_review,
            entry.updated() or sortable_instant(datetime(1970, 1, 1, tzinfo=UTC)),
            # RFC 8259 JSON only: a state that would hold NaN or Infinity fails here, and its
            # event is set aside, instead of making every list page that holds it unparseable.
            json.dumps(state.as_dict(), separators=(",", ":"), allow_nan=False),
            encode_key(entry.last) if entry.last else "{}",
        )


class DeliveriesModel:
    """`rx_deliveries`: one row per stored delivery, in arrival order, with its outcome and how
    many conflicting copies came since."""

    name = "deliveries"
    topics = topics_of(
        Delivery.Received,
        Delivery.Processed,
        Delivery.Parked,
        Delivery.Corrected,
        Delivery.ConflictReceived,
    )

    tables: tuple[ReadTable, ...] = (DELIVERIES,)

    def __init__(self, dialect: str, *, suffix: str = "") -> None:
        self.dialect, self.table = dialect, DELIVERIES.name + suffix

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        """Folded in memory into whole rows, then written in one upsert: a delivery received
        and processed in one batch (most are) is one row of it; a delivery from an earlier
        batch (a replay, a correction, a conflicting copy) is read first."""
        received = {e.originator_id for _, e in events if isinstance(e, Delivery.Received)}
        entries = self.load(cursor, {e.originator_id for _, e in events} - received)
        self.fold(entries, events)
        self.write(cursor, [self.row(key, entry) for key, entry in entries.items()])

    def fold(self, entries: dict[UUID, dict[str, Any]], events: Sequence[Event]) -> None:
        for notification_id, event in events:
            if isinstance(event, Delivery.Received):
                key = row_key(self.dialect, event.originator_id)
                entries[event.originator_id] = {
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
            row = entries[event.originator_id]  # its Received came first, here or earlier
            if isinstance(event, Delivery.Parked):
                row["outcome"], row["reason"] = PARKED, event.reason
            elif isinstance(event, Delivery.Processed):
                row["outcome"], row["reason"] = PROCESSED, None
            elif isinstance(event, Delivery.Corrected):
                row["type"], row["subject"], row["outcome"] = event.drx_type, event.subject, None
            elif isinstance(event, Delivery.ConflictReceived):
                row["conflicts"] += 1

    def row(self, aggregate_id: UUID, entry: dict[str, Any]) -> tuple[Any, ...]:
        return (
            *(entry[name] for name in DELIVERIES.names[:6]),
            shown_status(entry["outcome"], entry["conflicts"]) or "received",
            entry["reason"],
            entry["conflicts"],
        )

    def write(self, cursor: Cursor, rows: Sequence[Sequence[Any]]) -> None:
        insert_rows(
            cursor,
            self.dialect,
            DELIVERIES.insert(self.table),
            DELIVERIES.types,
            rows,
            # A row keeps its place (seq) and its arrival time; the rest follows its events.
            DELIVERIES.on_conflict_update(("type", "subject", "status", "reason", "conflicts")),
        )

    def load(self, cursor: Cursor, ids: Collection[UUID]) -> dict[UUID, dict[str, Any]]:
        if not ids:
            return {}
        keys = [row_key(self.dialect, i) for i in ids]
        where, params = in_list(self.dialect, "aggregate_id", keys)
        cursor.execute(
            f"SELECT {', '.join(DELIVERIES.names)} FROM {self.table} WHERE {where}",
            params,
        )
        loaded = {}
        for values in cursor.fetchall():
            row = dict(zip(DELIVERIES.names, values, strict=True))
            status = row.pop("status")
            row["outcome"] = {"received": None, CONFLICT: PROCESSED}.get(status, status)
            aggregate_id = UUID(str(row["aggregate_id"]))
            row["aggregate_id"] = row_key(self.dialect, aggregate_id)
            loaded[aggregate_id] = row
        return loaded
