"""The projector: follows the event store's notification log into the read models, exactly once.

Each batch of events and the read models' new tracking positions commit in one transaction of
the read database, and a position only moves from the value the batch started from (a compare-
and-set), so a crash or restart neither skips nor doubles an event, and a second projector that
got in by mistake rolls back instead of applying a batch twice. It runs in one place per
database: the process that holds the leadership lock (`leadership.py`). An event a read model
cannot apply is set aside as a dead letter (`dead_letters.py`) while the rest go on. Between
batches, the leader also runs the overdue watch (`overdue.py`) and the audit sealer (`seals.py`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol

from domain.application import Prescriptions
from domain.clock import Clock, SystemClock
from infrastructure import dead_letters
from infrastructure.change_feed import channel_for
from infrastructure.change_projection import ChangeHeads, ChangesModel
from infrastructure.database import Cursor, ReadDatabase
from infrastructure.leadership import Leadership, leadership_for
from infrastructure.overdue import OverdueWatch
from infrastructure.read_models import DeliveriesModel, PrescriptionsModel, ReadModel
from infrastructure.read_tables import TRACKING_TABLE
from infrastructure.seals import Sealer
from infrastructure.settings import Settings

log = logging.getLogger(__name__)

# The longest pause between attempts while the projections keep failing.
MAX_PAUSE_S = 5.0


class TrackingConflictError(RuntimeError):
    """Another runner moved the projection on; this batch was rolled back."""


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
    advance_all(cursor, {name: old}, new)


def advance_all(cursor: Cursor, positions: dict[str, int], new: int) -> None:
    """Move each named position from its old value (and only from it) to `new`, in one
    statement: a compare-and-set, so that a second runner's batch rolls back."""
    names = list(positions)
    rows = ", ".join(["(%s, %s)"] * len(names))
    cases = " ".join(["WHEN %s THEN %s"] * len(names))
    cursor.execute(
        f"INSERT INTO {TRACKING_TABLE} (name, position) VALUES {rows}"
        f" ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        f" WHERE {TRACKING_TABLE}.position = CASE excluded.name {cases} END",
        [v for name in names for v in (name, new)]
        + [v for name in names for v in (name, positions[name])],
    )
    if cursor.rowcount != len(names):
        raise TrackingConflictError(", ".join(names))


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


class Projector:
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
        models: Sequence[ReadModel],
        leadership: Leadership,
        batch_size: int = 1000,
        poll_interval_s: float = 0.5,
        watch: OverdueWatch | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.app, self.db, self.models = app, db, models
        self.leadership, self.watch, self.sealer = leadership, watch, sealer
        self.batch_size, self.poll_interval_s = batch_size, poll_interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The head every projection had reached at the last look: an idle poll is one query.
        self._caught_up_to = 0
        self._standing_by = False
        self._positions: dict[str, int] | None = None

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def status(self) -> list[ProjectionStatus]:
        head, positions = self.head(), read_positions(self.db)
        dead = dead_letters.counts(self.db)
        return [
            ProjectionStatus(p.name, positions.get(p.name, 0), head, dead.get(p.name, 0))
            for p in self.models
        ]

    def catch_up(self, *, watch: bool = False) -> int:
        """Process what is there now, if this runner leads; the number of events handled.
        `watch`: run the overdue watch and the sealer too, between batches (the background
        loop does)."""
        with self._lock:
            if not self.leadership.acquire():
                if not self._standing_by:
                    log.info(
                        "another process runs the projections on this database: this one "
                        "waits as a standby, and takes over if that one stops"
                    )
                self._standing_by = True
                return 0
            if self._standing_by:  # another process led meanwhile: ask where it left off
                self._positions = None
            self._standing_by = False
            handled = 0
            while True:
                if watch:  # between batches too: a catch-up lasts as long as DRx keeps sending
                    self._watch()
                    self._seal()
                head = self.head()
                if head <= self._caught_up_to:  # nothing stored since the last look
                    return handled
                batch = self._catch_up_batch(head)
                if batch is None:
                    self._caught_up_to = head
                    return handled
                handled += batch

    def _watch(self) -> None:
        """The overdue watch (at most once per its interval); its failures are its own, kept
        out of the projections' back-off."""
        if self.watch is None:
            return
        try:
            self.watch.check()
        except Exception as exc:
            log.warning("the overdue watch failed: %s", dead_letters.describe_failure(exc))

    def _seal(self) -> None:
        """The audit seals (at most once per the sealer's interval); their failures are their
        own too."""
        if self.sealer is None:
            return
        try:
            self.sealer.tick()
        except Exception as exc:
            log.warning("sealing the store failed: %s", dead_letters.describe_failure(exc))

    def _catch_up_batch(self, head: int) -> int | None:
        """One batch for every projection behind `head`: the notification log read once (the
        projections' topics together), and every projection's rows and new position committed
        in one transaction. The events handled; None when every projection was at `head`."""
        # The positions this leader committed last (read again after any failure): a batch
        # does not need to ask the database where it left off.
        if self._positions is None:
            self._positions = read_positions(self.db)
        behind = {p.name: self._positions.get(p.name, 0) for p in self.models}
        start = min(behind.values())
        if start >= head:
            return None
        topics = tuple(t for p in self.models for t in p.topics)
        notifications = self.app.recorder.select_notifications(
            start=start + 1, limit=self.batch_size, stop=head, topics=topics
        )
        # Fewer than a full batch means nothing of interest up to the head we read first.
        last = notifications[-1].id if len(notifications) == self.batch_size else head
        self._positions = None  # until this batch commits
        try:
            events = [(n, self.app.mapper.to_domain_event(n)) for n in notifications]
            with self.db.transaction(durable=False) as cursor:  # done again after a crash
                self._apply(cursor, behind, last, events, one_by_one=False)
        except Exception as exc:
            if isinstance(exc, TrackingConflictError) or not dead_letters.is_poison(exc):
                raise
            log.warning(
                "a projection batch failed (%s): applying it one event at a time",
                dead_letters.describe_failure(exc),
            )
            with self.db.transaction(durable=False) as cursor:
                self._apply(cursor, behind, last, [(n, None) for n in notifications], True)
        self._positions = {name: max(position, last) for name, position in behind.items()}
        return len(notifications)

    def _apply(
        self,
        cursor: Cursor,
        behind: dict[str, int],
        last: int,
        events: Sequence[tuple[Any, DomainEventProtocol[Any] | None]],
        one_by_one: bool,
    ) -> None:
        names = [p.name for p in self.models if behind[p.name] < last]
        waiting = dead_letters.aggregates_set_aside(
            cursor, self.db.dialect, names, lock=TRACKING_TABLE
        )
        for projection in self.models:
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
        advance_all(cursor, {name: behind[name] for name in names}, last)

    def _apply_one_by_one(
        self,
        cursor: Cursor,
        projection: ReadModel,
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
        chosen = [p for p in self.models if name is None or p.name == name]
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
                self.catch_up(watch=True)
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


def projector_for(
    app: Prescriptions,
    db: ReadDatabase,
    settings: Settings,
    clock: Clock | None = None,
    **options: Any,
) -> Projector:
    """The projector of every read model of the service, competing for the database's lead,
    with the overdue watch beside it."""
    models = read_models(app, db.dialect, channel=channel_for(settings.postgres_schema))
    watch = OverdueWatch(app, ChangeHeads(db), settings.request_sla_s, clock or SystemClock())
    return Projector(app, db, models, leadership_for(settings), watch=watch, **options)


def read_models(
    app: Prescriptions, dialect: str, *, suffix: str = "", channel: str | None = None
) -> list[ReadModel]:
    """Every read model of the service, in the order a batch applies them (`suffix`: writing
    into fresh copies of their tables, for a rebuild; `channel`: where the change feed
    announces its new changes, on PostgreSQL)."""
    return [
        PrescriptionsModel(dialect, app.facts_until, suffix=suffix),
        DeliveriesModel(dialect, suffix=suffix),
        ChangesModel(
            dialect,
            app.facts_until,
            app.delivery_at,
            suffix=suffix,
            channel=channel,
        ),
    ]
