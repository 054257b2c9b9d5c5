"""Projection rebuilds: replay the event store from the start into a fresh table while the
service keeps running, then compare it with the live one or swap it in atomically.

1. Bulk phase, up to where the live projection was when the rebuild started, into a table that
   nobody reads yet. A read model of one row per aggregate (`AggregateRows`: prescriptions,
   deliveries) is folded in memory (`MemoryFold`): an aggregate's entry stays there while its
   events come, however many batches they span, and its row is written once (COPY on
   PostgreSQL), when it is the least recently touched of more than `MEMORY` entries, or at the
   end; one whose events come again after that is read back, folded on and written again (an
   upsert). On PostgreSQL, from `PARALLEL_FROM` events on, `WORKERS` processes do this at once
   (`fold_in_workers`), each for its own range of aggregate ids, reading its share of the
   notification log a window at a time on its own connection and decoding it with the
   application's mapper: the machine's cores read, decode, fold and write in parallel. On
   SQLite, and for a smaller bulk phase, the fold runs in this process. The change feed (a row
   per change, not per aggregate) is applied in batches of `BATCH` events, a transaction each.
2. Final phase, in one transaction: the rest, up to where the live projection is now, is applied
   to the fresh table; then either the two are compared row by row (`--verify`: nothing is
   swapped), or the live table is dropped and the fresh one renamed in its place. The tracking
   position does not move: the fresh table ends exactly where the live one was, and the live
   runner carries on from there, on the new table. Readers wait for that transaction at most;
   they never see a half-built table.

PostgreSQL: to compare, the final transaction is REPEATABLE READ (one snapshot of both tables);
to swap, it first locks the tracking row, then the live table, in the order the live runner
takes them. SQLite: the bulk phase runs in this process; the final transaction holds the
database's write lock, so webhook writes wait for it (a few seconds at most at 100k rows).
Events the live projection set aside as dead letters are left out of the rebuilt model too;
those retried (and applied live) while the bulk phase ran are applied in the final transaction.
A rebuilt row is the live model's own fold (`ReadModel.apply`, or `AggregateRows.fold` over
more events at a time), so it equals the live one whatever the order the facts came in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent

from domain.application import Prescriptions
from infrastructure import dead_letters
from infrastructure.database import Cursor, ReadDatabase, insert_rows, open_read_database
from infrastructure.eventstore import open_prescriptions
from infrastructure.projector import read_models, read_position
from infrastructure.read_models import AggregateRows, Event, ReadModel
from infrastructure.read_tables import TABLES, TRACKING_TABLE, ReadTable
from infrastructure.recorders import EVENTS_TABLE
from infrastructure.settings import Settings

BATCH = 10_000
# Entries an in-memory fold keeps; past them, it writes the least recently touched half.
MEMORY = 10_000
# On PostgreSQL, a bulk phase of at least this many events is folded by WORKERS processes, each
# reading WINDOW notification ids at a time.
PARALLEL_FROM = 50_000
WORKERS = 2
WINDOW = 10_000
PROJECTION_NAMES = tuple(TABLES)
Progress = Callable[[int, int], None]


class RebuildError(RuntimeError):
    """The rebuild cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Difference:
    key: str
    field: str
    live: Any
    rebuilt: Any
    # Whom the row is about (for the PHI access log's entry of whoever is shown the values).
    prescription_id: str | None = None
    patient_id: str | None = None


@dataclass
class RebuildResult:
    name: str
    events: int = 0
    rows: int = 0
    seconds: float = 0.0
    position: int = 0
    swapped: bool = False
    differences: list[Difference] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A read model writing into fresh copies of its tables."""

    model: ReadModel
    tables: tuple[ReadTable, ...]


FRESH = "_rebuild"


def target(app: Prescriptions, dialect: str, name: str) -> Target:
    model = next(m for m in read_models(app, dialect, suffix=FRESH) if m.name == name)
    return Target(model, TABLES[name])


class Rebuilder:
    """`settings`: what the worker processes of a parallel bulk phase connect with (without
    them, or with `workers` 1, it runs in this process); `parallel_from`: the fewest events a
    bulk phase has for them to start (`PARALLEL_FROM`); `memory`: the entries an in-memory fold
    keeps (`MEMORY`)."""

    def __init__(
        self,
        app: Prescriptions,
        db: ReadDatabase,
        settings: Settings | None = None,
        *,
        workers: int = WORKERS,
        parallel_from: int = PARALLEL_FROM,
        memory: int = MEMORY,
    ) -> None:
        self.app, self.db, self.settings = app, db, settings
        self.workers, self.parallel_from, self.memory = workers, parallel_from, memory

    def rebuild(
        self, name: str, *, verify: bool, progress: Progress | None = None
    ) -> RebuildResult:
        chosen = target(self.app, self.db.dialect, name)
        pairs = [(table, f"{table.name}{FRESH}") for table in chosen.tables]
        result = RebuildResult(name)
        started = time.perf_counter()
        try:
            indexes = [self._create_fresh(table.name, fresh) for table, fresh in pairs]
            goal = read_position(self.db, name)
            left_out = self._set_aside(name)
            position = self._bulk(chosen.model, 0, goal, left_out, result, progress)
            live_names = [table.name for table, _ in pairs]
            with self._final_transaction(live_names, name, swap=not verify) as (
                cursor,
                live_position,
            ):
                skip = self._set_aside(name)
                # Dead letters retried (and applied by the live projection) while the bulk phase
                # left them out: applied here too, or the swapped table would lose them.
                retried = self._events_at(sorted(left_out - skip), chosen.model)
                if retried:
                    self._apply(cursor, chosen.model, retried)
                    result.events += len(retried)
                for events in self._batches(position, live_position, chosen.model, skip):
                    self._apply(cursor, chosen.model, events)
                    result.events += len(events)
                result.position = live_position
                cursor.execute(f"SELECT COUNT(*) FROM {pairs[0][1]}")
                counted = cursor.fetchone()
                result.rows = int(counted[0]) if counted else 0
                if verify:
                    for table, fresh in pairs:
                        result.differences += self._compare(cursor, table, fresh)
                else:
                    for (table, fresh), statements in zip(pairs, indexes, strict=True):
                        self._swap(cursor, table.name, fresh, statements)
                    result.swapped = True
        finally:
            if not result.swapped:
                with self.db.transaction() as cursor:
                    for _, fresh in pairs:
                        cursor.execute(f"DROP TABLE IF EXISTS {fresh}")
        result.seconds = time.perf_counter() - started
        return result

    # The fresh table

    def _create_fresh(self, live: str, fresh: str) -> list[str]:
        """Create the fresh table; return the index statements to run after the swap."""
        with self.db.transaction() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {fresh}")
            if self.db.dialect == "postgresql":
                # Indexes come along (built as it fills), named after the fresh table: they
                # take the live ones' names once those are dropped with the live table.
                cursor.execute(f"CREATE TABLE {fresh} (LIKE {live} INCLUDING ALL)")
                return _index_renames(cursor, live, fresh)
            cursor.execute(
                "SELECT type, sql FROM sqlite_master WHERE tbl_name = %s AND sql IS NOT NULL",
                (live,),
            )
            rows = cursor.fetchall()
            table_sql = next(sql for kind, sql in rows if kind == "table")
            cursor.execute(re.sub(rf"\b{live}\b", fresh, table_sql, count=1))
            # SQLite index names are global: the live ones are recreated on the fresh table when
            # it takes the live table's place.
            return [sql for kind, sql in rows if kind == "index"]

    def _set_aside(self, name: str) -> set[int]:
        """The positions the live projection set aside as dead letters: left out here too, so
        that the rebuilt model is what the live one would be."""
        return {letter.position for letter in dead_letters.dead_letters(self.db, name)}

    def _batches(
        self, start: int, stop: int, projection: ReadModel, skip: set[int]
    ) -> Iterator[list[Any]]:
        position = start
        while position < stop:
            notifications = self.app.recorder.select_notifications(
                start=position + 1, limit=BATCH, stop=stop, topics=projection.topics
            )
            position = notifications[-1].id if len(notifications) == BATCH else stop
            kept = [n for n in notifications if n.id not in skip]
            if kept:
                yield [(n.id, self.app.mapper.to_domain_event(n)) for n in kept]

    def _events_at(self, positions: list[int], projection: ReadModel) -> list[Any]:
        """The events at these positions that the projection takes, decoded, in order."""
        found = []
        for position in positions:
            rows = self.app.recorder.select_notifications(
                start=position, limit=1, stop=position, topics=projection.topics
            )
            found += [(n.id, self.app.mapper.to_domain_event(n)) for n in rows]
        return found

    @staticmethod
    def _apply(cursor: Cursor, projection: ReadModel, events: list[Any]) -> None:
        try:
            projection.apply(cursor, events)
        except Exception as exc:
            if not dead_letters.is_poison(exc):
                raise
            raise _poisoned(exc, f"events {events[0][0]}-{events[-1][0]}") from None

    def _bulk(
        self,
        projection: ReadModel,
        start: int,
        stop: int,
        skip: set[int],
        result: RebuildResult,
        progress: Progress | None,
    ) -> int:
        if isinstance(projection, AggregateRows):
            if self._in_workers(stop - start):
                assert self.settings is not None
                share = Share(
                    self.settings, projection.name, start, stop, frozenset(skip), self.memory
                )
                result.events += fold_in_workers(share, self.workers, progress)
            else:
                result.events += self._fold_here(projection, start, stop, skip, progress)
        else:
            for events in self._batches(start, stop, projection, skip):
                with self.db.transaction() as cursor:
                    self._apply(cursor, projection, events)
                result.events += len(events)
                if progress:
                    progress(events[-1][0], stop)
        if progress:
            progress(stop, stop)
        return stop

    def _in_workers(self, events: int) -> bool:
        return (
            self.db.dialect == "postgresql"
            and os.name == "posix"  # the workers' report pipes (`fold_in_workers`)
            and self.settings is not None
            and self.workers > 1
            and events >= self.parallel_from
        )

    def _fold_here(
        self,
        projection: AggregateRows,
        start: int,
        stop: int,
        skip: set[int],
        progress: Progress | None,
    ) -> int:
        fold = MemoryFold(self.db, projection, self.memory)
        with _collector_paused():
            for events in self._batches(start, stop, projection, skip):
                fold.take(events)
                if progress:
                    progress(fold.position, stop)
            fold.write()
        return fold.events

    # The final transaction

    @contextmanager
    def _final_transaction(
        self, live: list[str], name: str, *, swap: bool
    ) -> Iterator[tuple[Cursor, int]]:
        """The last transaction, and the live projection's position in it."""
        with self.db.transaction() as cursor:
            postgres = self.db.dialect == "postgresql"
            if postgres and not swap:
                # Compare both tables as of one instant, while the live runner carries on.
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # To swap: the tracking row, then the live table, in the order the live runner
            # takes them (its batch locks the row first), so that the two cannot deadlock.
            lock = " FOR UPDATE" if swap and postgres else ""
            cursor.execute(f"SELECT position FROM {TRACKING_TABLE} WHERE name = %s{lock}", (name,))
            row = cursor.fetchone()
            if swap and postgres:
                cursor.execute(f"LOCK TABLE {', '.join(live)} IN ACCESS EXCLUSIVE MODE")
            yield cursor, int(row[0]) if row else 0

    def _swap(self, cursor: Cursor, live: str, fresh: str, indexes: list[str]) -> None:
        cursor.execute(f"DROP TABLE {live}")
        cursor.execute(f"ALTER TABLE {fresh} RENAME TO {live}")
        for statement in indexes:
            cursor.execute(statement)

    def _compare(self, cursor: Cursor, table: ReadTable, fresh: str) -> Iterator[Difference]:
        """Merge the two tables in key order, a page at a time, and name every difference."""
        live, rebuilt = _rows(cursor, table, table.name), _rows(cursor, table, fresh)
        old, new = next(live, None), next(rebuilt, None)
        while old is not None or new is not None:
            if new is None or (old is not None and old[0] < new[0]):
                assert old is not None
                yield Difference(old[0], "(row)", "present", "missing", *table.about(old))
                old = next(live, None)
            elif old is None or new[0] < old[0]:
                yield Difference(new[0], "(row)", "missing", "present", *table.about(new))
                new = next(rebuilt, None)
            else:
                yield from _row_differences(table, old, new)
                old, new = next(live, None), next(rebuilt, None)


def _index_renames(cursor: Cursor, live: str, fresh: str) -> list[str]:
    """The statements that give each index of the fresh table (and the constraint it backs)
    the name of the live table's index of the same definition, to run after the swap.

    `LIKE ... INCLUDING ALL` names the copies after the fresh table
    (`rx_prescriptions_rebuild_status_prescription_id_idx`); kept so, every index's name would
    differ from the migrations' after a rebuild, and a later migration that alters or drops
    one by its name would fail on a rebuilt database only."""
    by_definition: dict[tuple[bool, str], list[str]] = {}
    for name, definition in _indexes(cursor, live):
        by_definition.setdefault(_index_shape(definition), []).append(name)
    renames = []
    for name, definition in _indexes(cursor, fresh):
        names = by_definition.get(_index_shape(definition))
        if names:
            renames.append(f"ALTER INDEX {_quoted(name)} RENAME TO {_quoted(names.pop(0))}")
    return renames


def _indexes(cursor: Cursor, table: str) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass"
        " ORDER BY c.relname",
        (table,),
    )
    return [(str(name), str(definition)) for name, definition in cursor.fetchall()]


def _index_shape(definition: str) -> tuple[bool, str]:
    """An index's definition without its name and its table's: `CREATE UNIQUE INDEX n ON
    public.t USING btree (a) INCLUDE (b)` is (True, "btree (a) INCLUDE (b)")."""
    return definition.startswith("CREATE UNIQUE "), definition.split(" USING ", 1)[1]


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _poisoned(exc: BaseException, events: str) -> RebuildError:
    return RebuildError(
        f"{events} cannot be projected ({dead_letters.describe_failure(exc)}); the live "
        "projection sets such events aside as dead letters (drx projections status): let it "
        "reach them, then rebuild"
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a fold holds thousands of entries: its passes
    would walk them all again and again, and none is garbage (measured on 126k events in one
    process: 26k events/s with it, 41k without). What the fold drops is freed by reference
    counting: it makes no cycles (a collection afterwards finds a few dozen objects)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _copy_rows(cursor: Cursor, dialect: str, table: ReadTable, name: str, rows: list[Any]) -> None:
    """New rows into a table that does not hold them: COPY on PostgreSQL (binary, the values as
    the columns' types: no text to escape, nor to parse)."""
    if not rows:
        return
    if dialect != "postgresql":
        insert_rows(cursor, dialect, table.insert(name), table.types, rows)
        return
    assert isinstance(cursor, psycopg.Cursor)
    with cursor.copy(f"COPY {name} ({', '.join(table.names)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(table.types))
        for row in rows:
            copy.write_row(row)


class MemoryFold:
    """The bulk phase of an `AggregateRows` model, folded in memory (the module's docstring):
    `take` each batch of events in order, then `write` what is left."""

    def __init__(self, db: ReadDatabase, model: AggregateRows, keep: int = MEMORY) -> None:
        self.db, self.model, self.keep = db, model, keep
        self.entries: dict[UUID, Any] = {}  # the least recently touched first
        self.written: set[UUID] = set()  # the aggregates whose row is in the table
        self.events = self.rows = self.position = 0

    def take(self, events: list[Event]) -> None:
        ids = dict.fromkeys(event.originator_id for _, event in events)
        touched = {key: self.entries.pop(key) for key in ids if key in self.entries}
        again = [key for key in ids if key not in touched and key in self.written]
        try:
            if again:
                with self.db.transaction() as cursor:
                    touched.update(self.model.load(cursor, again))
            self.model.fold(touched, events)
        except Exception as exc:
            if not dead_letters.is_poison(exc):
                raise
            raise _poisoned(exc, f"events {events[0][0]}-{events[-1][0]}") from None
        self.entries.update(touched)  # now the most recently touched
        self.events += len(events)
        self.position = events[-1][0]
        if len(self.entries) > self.keep:
            self.write(len(self.entries) - self.keep // 2)

    def write(self, count: int | None = None) -> None:
        """Write the `count` least recently touched entries' rows (all by default), and forget
        them: COPY those new to the table, an upsert for those written before."""
        chosen = list(itertools.islice(self.entries, count))
        new: list[tuple[Any, ...]] = []
        again: list[tuple[Any, ...]] = []
        try:
            for key in chosen:
                row = self.model.row(key, self.entries.pop(key))
                (again if key in self.written else new).append(row)
            with self.db.transaction() as cursor:
                _copy_rows(cursor, self.db.dialect, self.model.tables[0], self.model.table, new)
                if again:
                    self.model.write(cursor, again)
        except Exception as exc:
            if not dead_letters.is_poison(exc):
                raise
            raise _poisoned(exc, f"events up to {self.position}") from None
        self.written.update(chosen)
        self.rows += len(new)


# The parallel bulk phase (PostgreSQL)


FIRST_ID = UUID(int=0)


@dataclass(frozen=True)
class Share:
    """What a worker process of the parallel bulk phase folds: the events of the projection
    `name` after `start` up to `stop`, but those in `skip`, of the aggregates whose id is at
    least `lower` and below `upper` (None: no bound), keeping `memory` entries at most."""

    settings: Settings
    name: str
    start: int
    stop: int
    skip: frozenset[int]
    memory: int = MEMORY
    lower: UUID = FIRST_ID
    upper: UUID | None = None


def shares(share: Share, count: int) -> list[Share]:
    """The share cut into `count` ranges of aggregate ids of one size (the ids are uuid5s,
    spread evenly)."""
    bounds = [UUID(int=(k << 128) // count) for k in range(count)]
    return [
        dataclasses.replace(share, lower=lower, upper=upper)
        for lower, upper in zip(bounds, [*bounds[1:], None], strict=True)
    ]


# A worker process: the parent's import path, then its share, come on its standard input; it
# reports on the descriptor named by its argument (`fold_share`). A new interpreter rather than
# multiprocessing's spawn, which would run the parent's main script again in each.
_WORKER = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from infrastructure.rebuild import serve_share; serve_share(int(sys.argv[1]))"
)


def fold_in_workers(share: Share, workers: int, progress: Progress | None) -> int:
    """Fold the share in `workers` processes (`fold_share`), one range of aggregate ids each;
    the events folded. Any failure of one stops the others and is raised here."""
    processes: list[subprocess.Popen[bytes]] = []
    reached: dict[Connection, int] = {}
    events = 0
    try:
        for part in shares(share, workers):
            ours, theirs = os.pipe()
            try:
                process = subprocess.Popen(  # noqa: S603 (this interpreter, our code)
                    [sys.executable, "-c", _WORKER, str(theirs)],
                    stdin=subprocess.PIPE,
                    pass_fds=(theirs,),
                )
            finally:
                os.close(theirs)
            reached[Connection(ours, writable=False)] = share.start
            processes.append(process)
            assert process.stdin is not None
            with process.stdin:
                pickle.dump(sys.path, process.stdin)
                pickle.dump(part, process.stdin)
        waiting = set(reached)
        while waiting:
            for ready in wait(list(waiting)):
                assert isinstance(ready, Connection)
                try:
                    kind, value = ready.recv()
                except EOFError:
                    raise RebuildError(
                        "a rebuild worker process ended before its share was done"
                    ) from None
                if kind == "failed":
                    raise value
                if kind == "done":
                    events += value
                    reached[ready] = share.stop
                    waiting.discard(ready)
                else:
                    reached[ready] = value
                if progress:
                    progress(min(reached.values()), share.stop)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
            process.wait()
        for connection in reached:
            connection.close()
    return events


def serve_share(report: int) -> None:
    """A worker process's start (`_WORKER`): its share from standard input, then `fold_share`
    reporting on the descriptor `report`."""
    share = pickle.load(sys.stdin.buffer)  # noqa: S301 (from the parent, on a pipe of its own)
    sys.stdout = sys.stderr  # nothing of ours writes there; should anything, not on the report
    # A Ctrl-C at the terminal is the parent's to handle: it stops its workers (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fold_share(share, Connection(report, readable=False))


def fold_share(share: Share, pipe: Connection) -> None:
    """A worker process of the parallel bulk phase: its own store and read database (one
    connection each), its share of the notification log read a window at a time, decoded
    with the application's mapper and folded in memory (`MemoryFold`). Sends ("at", position)
    as it goes, then ("done", events), or ("failed", a RebuildError); stops at the first page
    after the parent is gone (its pipe is broken)."""
    gc.disable()  # as `_collector_paused`, for the process's life
    settings = dataclasses.replace(share.settings, postgres_pool_size=1, postgres_max_overflow=1)
    app, db = open_prescriptions(settings), open_read_database(settings)
    try:
        model = target(app, db.dialect, share.name).model
        assert isinstance(model, AggregateRows)
        fold = MemoryFold(db, model, share.memory)
        for events in _share_pages(app, db, share, model.topics):
            fold.take(events)
            pipe.send(("at", fold.position))
        fold.write()
        pipe.send(("done", fold.events))
    except Exception as exc:
        failure = exc if isinstance(exc, RebuildError) else None
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            pipe.send(("failed", failure or RebuildError(f"a rebuild worker failed: {_said(exc)}")))
    finally:
        db.close()
        app.close()
        pipe.close()


def _said(exc: BaseException) -> str:
    """A failure in a sentence, without its message when it may quote an event's data."""
    if isinstance(exc, dead_letters.TRANSIENT):
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return dead_letters.describe_failure(exc)


def _share_pages(
    app: Prescriptions, db: ReadDatabase, share: Share, topics: tuple[str, ...]
) -> Iterator[list[Event]]:
    """The share's events, decoded, a window of notification ids at a time (a range of the
    notification id's index)."""
    upper = " AND originator_id < %s" if share.upper is not None else ""
    statement = (
        "SELECT notification_id, originator_id, originator_version, topic, state"
        f" FROM {EVENTS_TABLE} WHERE notification_id > %s AND notification_id <= %s"
        f" AND topic = ANY(%s) AND originator_id >= %s{upper} ORDER BY notification_id"
    )
    bounds = [share.lower] if share.upper is None else [share.lower, share.upper]
    decode, skip, position = app.mapper.to_domain_event, share.skip, share.start
    while position < share.stop:
        end = min(position + WINDOW, share.stop)
        with db.transaction() as cursor:
            # Planned for each window's values, never as a prepared statement: PostgreSQL's
            # generic plan for it scans the primary key's whole id range in every window. In
            # binary: the events' bytes as they are, not in hex (a third less CPU, both ends).
            assert isinstance(cursor, psycopg.Cursor)
            params = [position, end, list(topics), *bounds]
            rows = cursor.execute(statement, params, prepare=False, binary=True).fetchall()
        position = end
        events = [
            (notification_id, decode(StoredEvent(originator_id, version, topic, bytes(state))))
            for notification_id, originator_id, version, topic, state in rows
            if notification_id not in skip
        ]
        if events:
            yield events


def _rows(
    cursor: Cursor, table: ReadTable, name: str, page: int = 5000
) -> Iterator[tuple[Any, ...]]:
    columns, after, key = ", ".join(table.compared), None, table.identity
    while True:
        where = f"WHERE {key} > %s " if after is not None else ""
        cursor.execute(
            f"SELECT {columns} FROM {name} {where}ORDER BY {key} LIMIT {page}",
            (after,) if after is not None else (),
        )
        rows = cursor.fetchall()
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1][0]


def _row_differences(
    table: ReadTable, old: tuple[Any, ...], new: tuple[Any, ...]
) -> Iterator[Difference]:
    about = table.about(old)
    for index, name in enumerate(table.compared[1:], start=1):
        if name == table.json_column:
            for difference in _json_differences(
                old[0], name, json.loads(old[index]), json.loads(new[index])
            ):
                yield dataclasses.replace(difference, prescription_id=about[0], patient_id=about[1])
        elif _normal(name, old[index]) != _normal(name, new[index]):
            yield Difference(
                old[0], name, _normal(name, old[index]), _normal(name, new[index]), *about
            )


def _normal(column: str, value: Any) -> Any:
    """SQLite keeps booleans as 0 and 1: show and compare them as booleans."""
    return bool(value) if column == "needs_review" else value


def _json_differences(
    key: str, column: str, live: dict[str, Any], rebuilt: dict[str, Any]
) -> Iterator[Difference]:
    for name in sorted(live.keys() | rebuilt.keys()):
        if live.get(name) != rebuilt.get(name):
            yield Difference(key, f"{column}.{name}", live.get(name), rebuilt.get(name))
