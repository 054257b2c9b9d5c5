"""Projections: follow the event store's notification log into read tables, exactly once.

Each batch of events and the projection's new tracking position commit in one transaction of the
read database, and the position only moves from the value the batch started from (a compare-and-
set), so a crash or restart neither skips nor doubles an event, and a second runner that got in by
mistake rolls back instead of applying a batch twice. Projections run in one place per database:
the runner that holds the leadership lock (see `leadership.py`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.delivery import Delivery
from domain.facts import Fact, FactKind
from domain.prescription import Prescription
from domain.service import Prescriptions
from domain.state import derive_state
from infrastructure.leadership import Leadership, leadership_for
from infrastructure.readstore import Cursor, ReadDatabase, insert_rows
from infrastructure.settings import Settings

log = logging.getLogger(__name__)

TRACKING_TABLE = "drx_projection_tracking"


def sortable_instant(moment: datetime) -> str:
    """The fixed-width UTC text the read tables keep timestamps in; it sorts as it compares."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TrackingConflictError(RuntimeError):
    """Another runner moved the projection on; this batch was rolled back."""


Event = tuple[int, DomainEventProtocol[Any]]


class Projection(Protocol):
    name: str
    topics: tuple[str, ...]

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None: ...


def _key(dialect: str, aggregate_id: UUID) -> Any:
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
                f.data,
                f.correlation,
                recorded_at.isoformat(),
            ]
            for f, recorded_at in facts
        ],
        separators=(",", ":"),
    )


def decode_facts(text: str) -> list[tuple[Fact, datetime]]:
    return [
        (
            Fact(
                event_id,
                FactKind(kind),
                datetime.fromisoformat(occurred_at),
                sequence,
                data,
                correlation,
            ),
            datetime.fromisoformat(recorded_at),
        )
        for event_id, kind, occurred_at, sequence, data, correlation, recorded_at in json.loads(
            text
        )
    ]


@dataclass
class _Entry:
    subject: str
    facts: list[tuple[Fact, datetime]] = field(default_factory=list)


class PrescriptionsProjection:
    """`rx_prescriptions`: one row per prescription with its state, the columns the list filters
    on, and its facts (so that a new fact re-derives the state without reading the store)."""

    name = "prescriptions"
    topics = _topics(Prescription.Opened, *Prescription.FactRecorded.__subclasses__())

    def __init__(self, dialect: str, table: str = "rx_prescriptions") -> None:
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
            f"INSERT INTO {self.table} (aggregate_id, prescription_id, status, patient_id,"
            " pharmacy_ncpdp_id, needs_review, updated_at, state, facts)",
            ("uuid", "text", "text", "text", "text", "boolean", "text", "text", "text"),
            [self._row(aggregate_id, entry) for aggregate_id, entry in entries.items()],
            "ON CONFLICT (aggregate_id) DO UPDATE SET status = excluded.status,"
            " patient_id = excluded.patient_id, pharmacy_ncpdp_id = excluded.pharmacy_ncpdp_id,"
            " needs_review = excluded.needs_review, updated_at = excluded.updated_at,"
            " state = excluded.state, facts = excluded.facts",
        )

    def _load(self, cursor: Cursor, ids: list[UUID]) -> dict[UUID, _Entry]:
        if not ids:
            return {}
        where, params = _in_list(self.dialect, "aggregate_id", [_key(self.dialect, i) for i in ids])
        cursor.execute(
            f"SELECT aggregate_id, prescription_id, facts FROM {self.table} WHERE {where}", params
        )
        return {
            UUID(str(aggregate_id)): _Entry(subject, decode_facts(facts))
            for aggregate_id, subject, facts in cursor.fetchall()
        }

    def _row(self, aggregate_id: UUID, entry: _Entry) -> tuple[Any, ...]:
        state = derive_state(entry.subject, [f for f, _ in entry.facts])
        updated = max((at for _, at in entry.facts), default=datetime(1970, 1, 1, tzinfo=UTC))
        return (
            _key(self.dialect, aggregate_id),
            entry.subject,
            state.status,
            (state.patient or {}).get("drx_patient_id"),
            (state.pharmacy or {}).get("ncpdp_id"),
            state.needs_review,
            sortable_instant(updated),
            json.dumps(state.as_dict(), separators=(",", ":")),
            encode_facts(entry.facts),
        )


class DeliveriesProjection:
    """`rx_deliveries`: one row per stored delivery, in arrival order, with its outcome."""

    name = "deliveries"
    topics = _topics(Delivery.Received, Delivery.Processed, Delivery.Parked)

    def __init__(self, dialect: str, table: str = "rx_deliveries") -> None:
        self.dialect, self.table = dialect, table

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        """Folded in memory first: a delivery received and processed in one batch is one row of
        one multi-row insert (most are), and the outcomes of deliveries from earlier batches one
        update each."""
        new: dict[Any, list[Any]] = {}
        outcomes: dict[Any, tuple[str, str | None]] = {}
        for notification_id, event in events:
            key = _key(self.dialect, event.originator_id)
            if isinstance(event, Delivery.Received):
                received_at = sortable_instant(event.timestamp)
                new[key] = [key, event.event_id, notification_id, event.drx_type, event.subject]
                new[key] += [received_at, "received", None]
                continue
            outcome: tuple[str, str | None] = (
                ("parked", event.reason)
                if isinstance(event, Delivery.Parked)
                else ("processed", None)
            )
            if key in new:
                new[key][6:8] = outcome
            else:
                outcomes[key] = outcome
        if new:
            # A row already there (never, with the tracking row's guard) keeps its place and
            # takes the newer outcome, as an insert followed by updates would leave it.
            insert_rows(
                cursor,
                self.dialect,
                f"INSERT INTO {self.table} (aggregate_id, event_id, seq, type, subject,"
                " received_at, status, reason)",
                ("uuid", "text", "bigint", "text", "text", "text", "text", "text"),
                list(new.values()),
                "ON CONFLICT (aggregate_id) DO UPDATE SET status = excluded.status,"
                " reason = excluded.reason WHERE excluded.status <> 'received'",
            )
        if outcomes:
            cursor.executemany(
                f"UPDATE {self.table} SET status = %s, reason = %s WHERE aggregate_id = %s",
                [(status, reason, key) for key, (status, reason) in outcomes.items()],
            )


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


def read_positions(db: ReadDatabase) -> dict[str, int]:
    return {
        name: int(position)
        for name, position in db.query(f"SELECT name, position FROM {TRACKING_TABLE}")
    }


def read_position(db: ReadDatabase, name: str) -> int:
    """One projection's position (0 before its first event): a row among a handful."""
    return read_positions(db).get(name, 0)


def advance(cursor: Cursor, name: str, old: int, new: int) -> None:
    cursor.execute(
        f"INSERT INTO {TRACKING_TABLE} (name, position) VALUES (%s, %s)"
        f" ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        f" WHERE {TRACKING_TABLE}.position = %s",
        (name, new, old),
    )
    if cursor.rowcount != 1:
        raise TrackingConflictError(name)


class ProjectionRunner:
    """Runs the projections while it holds the leadership; sleeps between polls or until woken."""

    def __init__(
        self,
        app: Prescriptions,
        db: ReadDatabase,
        projections: Sequence[Projection],
        leadership: Leadership,
        batch_size: int = 1000,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.app, self.db, self.projections = app, db, projections
        self.leadership = leadership
        self.batch_size, self.poll_interval_s = batch_size, poll_interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The head every projection had reached at the last look: an idle poll is one query.
        self._caught_up_to = 0

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def status(self) -> list[ProjectionStatus]:
        head, positions = self.head(), read_positions(self.db)
        return [ProjectionStatus(p.name, positions.get(p.name, 0), head) for p in self.projections]

    def catch_up(self) -> int:
        """Process what is there now, if this runner leads; the number of events handled."""
        with self._lock:
            if not self.leadership.acquire():
                return 0
            handled = 0
            while True:
                head = self.head()
                if head <= self._caught_up_to:  # nothing stored since the last look
                    return handled
                batch = self._catch_up_batch(head)
                if batch is None:
                    self._caught_up_to = head
                    return handled
                handled += batch

    def _catch_up_batch(self, head: int) -> int | None:
        """One batch for every projection behind `head`: the notification log read once (the
        projections' topics together), and every projection's rows and new position committed
        in one transaction. The events handled; None when every projection was at `head`."""
        positions = read_positions(self.db)
        behind = {p.name: positions.get(p.name, 0) for p in self.projections}
        start = min(behind.values())
        if start >= head:
            return None
        topics = tuple(t for p in self.projections for t in p.topics)
        notifications = self.app.recorder.select_notifications(
            start=start + 1, limit=self.batch_size, stop=head, topics=topics
        )
        # Fewer than a full batch means nothing of interest up to the head we read first.
        last = notifications[-1].id if len(notifications) == self.batch_size else head
        events = [(n.id, n.topic, self.app.mapper.to_domain_event(n)) for n in notifications]
        with self.db.transaction(durable=False) as cursor:  # done again after a crash
            for projection in self.projections:
                position = behind[projection.name]
                if position >= last:
                    continue
                projection.apply(
                    cursor,
                    [
                        (number, event)
                        for number, topic, event in events
                        if number > position and topic in projection.topics
                    ],
                )
                advance(cursor, projection.name, position, last)
        return len(events)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="drx-projections", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.leadership.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
            except Exception as exc:  # a store outage or a conflict: log, wait, try again
                log.warning("projections paused: %s", type(exc).__name__)
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()


def projection_runner(
    app: Prescriptions, db: ReadDatabase, settings: Settings, **options: Any
) -> ProjectionRunner:
    """The runner of every read model of the service, competing for the database's lead."""
    projections: list[Projection] = [
        PrescriptionsProjection(db.dialect),
        DeliveriesProjection(db.dialect),
    ]
    return ProjectionRunner(app, db, projections, leadership_for(settings), **options)
