"""Projection rebuilds: replay the event store from the start into a fresh table while the
service keeps running, then compare it with the live one or swap it in atomically.

1. Bulk phase: the fresh table is filled in large batches (one transaction each), up to where
   the live projection was when the rebuild started.
2. Final phase, in one transaction: the rest, up to where the live projection is now, is applied
   to the fresh table; then either the two are compared row by row (`--verify`: nothing is
   swapped), or the live table is dropped and the fresh one renamed in its place. The tracking
   position does not move: the fresh table ends exactly where the live one was, and the live
   runner carries on from there, on the new table. Readers wait for that transaction at most;
   they never see a half-built table.

PostgreSQL: to compare, the final transaction is REPEATABLE READ (one snapshot of both tables);
to swap, it first locks the tracking row, then the live table, in the order the live runner
takes them. SQLite: it holds the database's write lock, so webhook writes wait for it (a few
seconds at most at 100k rows). Events the live projection set aside as dead letters are left
out of the rebuilt model too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from domain.application import Prescriptions
from infrastructure import dead_letters
from infrastructure.database import Cursor, ReadDatabase
from infrastructure.projector import read_models, read_position
from infrastructure.read_models import ReadModel
from infrastructure.read_tables import TABLES, TRACKING_TABLE, ReadTable

BATCH = 10_000
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
    def __init__(self, app: Prescriptions, db: ReadDatabase) -> None:
        self.app, self.db = app, db

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
            skip = self._set_aside(name)
            position = self._bulk(chosen.model, 0, goal, skip, result, progress)
            live_names = [table.name for table, _ in pairs]
            with self._final_transaction(live_names, name, swap=not verify) as (
                cursor,
                live_position,
            ):
                skip = self._set_aside(name)
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
                # Indexes come along (built as it fills); their names follow the table's.
                cursor.execute(f"CREATE TABLE {fresh} (LIKE {live} INCLUDING ALL)")
                return []
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

    @staticmethod
    def _apply(cursor: Cursor, projection: ReadModel, events: list[Any]) -> None:
        try:
            projection.apply(cursor, events)
        except Exception as exc:
            if not dead_letters.is_poison(exc):
                raise
            raise RebuildError(
                f"events {events[0][0]}-{events[-1][0]} cannot be projected "
                f"({dead_letters.describe_failure(exc)}); the live projection sets such events "
                "aside as dead letters (drx projections status): let it reach them, then rebuild"
            ) from None

    def _bulk(
        self,
        projection: ReadModel,
        start: int,
        stop: int,
        skip: set[int],
        result: RebuildResult,
        progress: Progress | None,
    ) -> int:
        for events in self._batches(start, stop, projection, skip):
            with self.db.transaction() as cursor:
                self._apply(cursor, projection, events)
            result.events += len(events)
            if progress:
                progress(events[-1][0], stop)
        if progress:
            progress(stop, stop)
        return stop

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
                yield Difference(old[0], "(row)", "present", "missing")  # type: ignore[index]
                old = next(live, None)
            elif old is None or new[0] < old[0]:
                yield Difference(new[0], "(row)", "missing", "present")
                new = next(rebuilt, None)
            else:
                yield from _row_differences(table, old, new)
                old, new = next(live, None), next(rebuilt, None)


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
    for index, name in enumerate(table.compared[1:], start=1):
        if name == table.json_column:
            yield from _json_differences(
                old[0], name, json.loads(old[index]), json.loads(new[index])
            )
        elif _normal(name, old[index]) != _normal(name, new[index]):
            yield Difference(old[0], name, _normal(name, old[index]), _normal(name, new[index]))


def _normal(column: str, value: Any) -> Any:
    """SQLite keeps booleans as 0 and 1: show and compare them as booleans."""
    return bool(value) if column == "needs_review" else value


def _json_differences(
    key: str, column: str, live: dict[str, Any], rebuilt: dict[str, Any]
) -> Iterator[Difference]:
    for name in sorted(live.keys() | rebuilt.keys()):
        if live.get(name) != rebuilt.get(name):
            yield Difference(key, f"{column}.{name}", live.get(name), rebuilt.get(name))
