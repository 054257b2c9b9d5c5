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

from domain.delivery import CONFLICT, PARKED, PROCESSED, Delivery, shown_status
from domain.facts import Fact, FactKind
from domain.prescription import Prescription
from domain.service import Prescriptions
from domain.state import derive_state
from infrastructure import dead_letters
from infrastructure.leadership import Leadership, leadership_for
from infrastructure.readstore import Cursor, ReadDatabase, insert_rows
from infrastructure.settings import Settings

log = logging.getLogger(__name__)

TRACKING_TABLE = "drx_projection_tracking"
# The longest pause between attempts while the projections keep failing.
MAX_PAUSE_S = 5.0


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
        allow_nan=False,
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
            # RFC 8259 JSON only: a state that would hold NaN or Infinity fails here, and its
            # event is set aside, instead of making every list page that holds it unparseable.
            json.dumps(state.as_dict(), separators=(",", ":"), allow_nan=False),
            encode_facts(entry.facts),
        )


class DeliveriesProjection:
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
    _COLUMNS = (
        "aggregate_id",
        "event_id",
        "seq",
        "type",
        "subject",
        "received_at",
        "status",
        "reason",
        "conflicts",
    )

    def __init__(self, dialect: str, table: str = "rx_deliveries") -> None:
        self.dialect, self.table = dialect, table

    def apply(self, cursor: Cursor, events: Sequence[Event]) -> None:
        """Folded in memory into whole rows, then written in one upsert: a delivery received
        and processed in one batch (most are) is one row of it; a delivery from an earlier
        batch (a replay, a correction, a conflicting copy) is read first."""
        rows: dict[Any, dict[str, Any]] = {}
        later = {
            _key(self.dialect, e.originator_id)
            for _, e in events
            if not isinstance(e, Delivery.Received)
        }
        rows.update(self._load(cursor, later))
        for notification_id, event in events:
            key = _key(self.dialect, event.originator_id)
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
                *(row[name] for name in self._COLUMNS[:6]),
                shown_status(row["outcome"], row["conflicts"]) or "received",
                row["reason"],
                row["conflicts"],
            ]
            for row in rows.values()
        ]
        insert_rows(
            cursor,
            self.dialect,
            f"INSERT INTO {self.table} ({', '.join(self._COLUMNS)})",
            ("uuid", "text", "bigint", "text", "text", "text", "text", "text", "integer"),
            written,
            "ON CONFLICT (aggregate_id) DO UPDATE SET type = excluded.type,"
            " subject = excluded.subject, status = excluded.status, reason = excluded.reason,"
            " conflicts = excluded.conflicts",
        )

    def _load(self, cursor: Cursor, keys: set[Any]) -> dict[Any, dict[str, Any]]:
        if not keys:
            return {}
        where, params = _in_list(self.dialect, "aggregate_id", list(keys))
        cursor.execute(f"SELECT {', '.join(self._COLUMNS)} FROM {self.table} WHERE {where}", params)
        loaded = {}
        for values in cursor.fetchall():
            row = dict(zip(self._COLUMNS, values, strict=True))
            status = row.pop("status")
            row["outcome"] = {"received": None, CONFLICT: PROCESSED}.get(status, status)
            row["aggregate_id"] = _key(self.dialect, UUID(str(row["aggregate_id"])))
            loaded[row["aggregate_id"]] = row
        return loaded


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    dead_letters: int = 0

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


@dataclass
class RetryResult:
    """What retrying one projection's dead letters did."""

    name: str
    applied: int = 0
    still_dead: int = 0


def _lock_positions(cursor: Cursor, dialect: str, names: Sequence[str]) -> None:
    """Take the projections' tracking rows for this transaction (PostgreSQL; SQLite's BEGIN
    IMMEDIATE already holds the whole database), so that a batch and a retry of dead letters
    never interleave: each sees the dead letters the other left."""
    if dialect == "postgresql":
        cursor.execute(
            f"SELECT position FROM {TRACKING_TABLE} WHERE name = ANY(%s) FOR UPDATE", (list(names),)
        )


class ProjectionRunner:
    """Runs the projections while it holds the leadership; sleeps between polls or until woken.

    A batch that fails because of one of its events (`dead_letters.is_poison`) is done again
    one event at a time, each in a savepoint, and the events that fail are set aside as dead
    letters with the reason, while the rest of the batch, and the projection, go on. Any other
    failure (the store unreachable, say) leaves the batch to be tried again, whole, after a
    pause that grows while the failures last.
    """

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
        dead = dead_letters.counts(self.db)
        return [
            ProjectionStatus(p.name, positions.get(p.name, 0), head, dead.get(p.name, 0))
            for p in self.projections
        ]

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
        try:
            events = [(n, self.app.mapper.to_domain_event(n)) for n in notifications]
            with self.db.transaction(durable=False) as cursor:  # done again after a crash
                self._apply(cursor, behind, last, events, one_by_one=False)
        except Exception as exc:
            if not dead_letters.is_poison(exc):
                raise
            log.warning(
                "a projection batch failed (%s): applying it one event at a time",
                dead_letters.describe_failure(exc),
            )
            with self.db.transaction(durable=False) as cursor:
                self._apply(cursor, behind, last, [(n, None) for n in notifications], True)
        return len(notifications)

    def _apply(
        self,
        cursor: Cursor,
        behind: dict[str, int],
        last: int,
        events: Sequence[tuple[Any, DomainEventProtocol[Any] | None]],
        one_by_one: bool,
    ) -> None:
        names = [p.name for p in self.projections if behind[p.name] < last]
        _lock_positions(cursor, self.db.dialect, names)
        waiting = dead_letters.aggregates_set_aside(cursor, names)
        for projection in self.projections:
            position = behind[projection.name]
            if position >= last:
                continue
            mine = [
                (n, event)
                for n, event in events
                if n.id > position and n.topic in projection.topics
            ]
            held = waiting[projection.name]
            if one_by_one:
                self._apply_one_by_one(cursor, projection, mine, held)
            else:
                for n, _ in mine:
                    if n.originator_id in held:
                        self._set_aside(cursor, projection.name, n, dead_letters.HELD_REASON, True)
                projection.apply(
                    cursor,
                    [(n.id, event) for n, event in mine if n.originator_id not in held],  # type: ignore[misc]
                )
            advance(cursor, projection.name, position, last)

    def _apply_one_by_one(
        self,
        cursor: Cursor,
        projection: Projection,
        events: Sequence[tuple[Any, DomainEventProtocol[Any] | None]],
        held: set[UUID],
        *,
        retrying: bool = False,
    ) -> int:
        """Apply each event in a savepoint; set aside those that fail (and their aggregates'
        later ones); `retrying`, take those that apply off the dead letters. The number
        applied."""
        applied = 0
        for notification, decoded in events:
            if notification.originator_id in held:
                self._set_aside(
                    cursor, projection.name, notification, dead_letters.HELD_REASON, True
                )
                continue
            cursor.execute("SAVEPOINT drx_event")
            try:
                event = decoded or self.app.mapper.to_domain_event(notification)
                projection.apply(cursor, [(notification.id, event)])
            except Exception as exc:
                if not dead_letters.is_poison(exc):
                    raise
                cursor.execute("ROLLBACK TO SAVEPOINT drx_event")
                reason = dead_letters.describe_failure(exc)
                self._set_aside(cursor, projection.name, notification, reason, False)
                held.add(notification.originator_id)
                log.error(
                    "projection %s set event %d aside: %s",
                    projection.name,
                    notification.id,
                    reason,
                )
            else:
                applied += 1
                if retrying:
                    dead_letters.remove(cursor, projection.name, notification.id)
            cursor.execute("RELEASE SAVEPOINT drx_event")
        return applied

    def _set_aside(
        self, cursor: Cursor, projection: str, notification: Any, reason: str, held: bool
    ) -> None:
        dead_letters.set_aside(cursor, self.db.dialect, projection, notification, reason, held=held)

    def retry_dead_letters(self, name: str | None = None) -> list[RetryResult]:
        """Apply each projection's dead letters again (after a fix), in their order, as one
        transaction; those that still fail stay, with the new reason and one attempt more."""
        chosen = [p for p in self.projections if name is None or p.name == name]
        results = []
        with self._lock, self.db.transaction() as cursor:
            _lock_positions(cursor, self.db.dialect, [p.name for p in chosen])
            for projection in chosen:
                letters = dead_letters.dead_letters(self.db, projection.name)
                result = RetryResult(projection.name)
                events = []
                for letter in letters:
                    found = self.app.recorder.select_notifications(
                        start=letter.position, limit=1, stop=letter.position
                    )
                    if found:  # else the event is gone from the store: the audit says so
                        events.append((found[0], None))
                result.applied = self._apply_one_by_one(
                    cursor, projection, events, set(), retrying=True
                )
                result.still_dead = len(events) - result.applied
                results.append(result)
        return results

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
        failures = 0
        while not self._stop.is_set():
            try:
                self.catch_up()
                failures = 0
            except Exception as exc:  # a store outage or a conflict: log, wait, try again
                failures += 1
                level = (
                    logging.WARNING if isinstance(exc, dead_letters.TRANSIENT) else logging.ERROR
                )
                if failures == 1 or failures % 20 == 0:
                    log.log(level, "projections paused: %s", dead_letters.describe_failure(exc))
            pause = min(self.poll_interval_s * 2 ** min(failures, 10), MAX_PAUSE_S)
            self._wake.wait(pause if failures else self.poll_interval_s)
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
