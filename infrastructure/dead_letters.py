"""Dead letters: the events a projection could not apply, set aside with the reason so that the
projection goes on (as Marten's async daemon does), shown to operators, and retried once fixed.

What counts as the event's own failure (`is_poison`): an error that its data, or our code on it,
causes: a value the read store cannot hold (PostgreSQL's DataError), a constraint it breaks, or
any exception of our own code. An unreachable or locked store, or a database error that is not
about the data (a missing table, say), is not the event's fault: the batch is tried again
later, whole, and nothing is set aside.

Each aggregate's events stay in order: once one of its events is set aside, its later events in
that projection are set aside behind it (`held`) instead of being applied without it, and a
retry applies them together, in their order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing import persistence

from domain.errors import describe_fault
from infrastructure.database import Cursor, ReadDatabase
from infrastructure.read_models import row_key

DEAD_LETTERS_TABLE = "drx_projection_dead_letters"
HELD_REASON = "held behind an earlier event of the same aggregate that was set aside"

# The store cannot be reached or is busy: try the whole batch again later.
TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
    persistence.OperationalError,
    persistence.InterfaceError,
)
# Errors of the database that the data causes.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    persistence.DataError,
    persistence.IntegrityError,
)
_DATABASE_ERRORS = (psycopg.Error, sqlite3.Error, persistence.PersistenceError)


def _over_a_limit(exc: BaseException) -> bool:
    """PostgreSQL's class 54, program limit exceeded (an index row over its 2,704 bytes: a
    value too long to index): an OperationalError to psycopg, yet no passing fault; the
    same event fails each time. Looked for in the error and what it was raised from."""
    for error in (exc, exc.__cause__):
        if isinstance(error, psycopg.Error) and (error.sqlstate or "").startswith("54"):
            return True
    return False


def is_poison(exc: BaseException) -> bool:
    """Whether the event being applied is what failed (see the module's docstring)."""
    if _over_a_limit(exc):
        return True
    if isinstance(exc, TRANSIENT):
        return False
    if isinstance(exc, _DATA_ERRORS):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, _DATABASE_ERRORS)


def describe_failure(exc: BaseException) -> str:
    """What failed, without the error's message, which may quote the event's data."""
    described = describe_fault(exc).removeprefix("internal error: ")
    sqlstate = getattr(getattr(exc, "diag", None), "sqlstate", None)
    return f"{described} (SQLSTATE {sqlstate})" if sqlstate else described


@dataclass(frozen=True)
class DeadLetter:
    projection: str
    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    reason: str
    held: bool
    attempts: int
    failed_at: str


def set_aside(
    cursor: Cursor,
    dialect: str,
    projection: str,
    notification: Any,
    reason: str,
    *,
    held: bool,
) -> None:
    """Record one event as a dead letter of `projection`; again after a retry, with one attempt
    more when it failed itself (not when it only waited behind another)."""
    cursor.execute(
        f"INSERT INTO {DEAD_LETTERS_TABLE} (projection, position, originator_id,"
        " originator_version, topic, reason, held, attempts, failed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s)"
        " ON CONFLICT (projection, position) DO UPDATE SET reason = excluded.reason,"
        f" held = excluded.held, attempts = {DEAD_LETTERS_TABLE}.attempts"
        " + (CASE WHEN excluded.held THEN 0 ELSE 1 END),"
        " failed_at = excluded.failed_at",
        (
            projection,
            notification.id,
            row_key(dialect, notification.originator_id),
            notification.originator_version,
            notification.topic,
            reason[:500],
            held,
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        ),
    )


def remove(cursor: Cursor, projection: str, position: int) -> None:
    cursor.execute(
        f"DELETE FROM {DEAD_LETTERS_TABLE} WHERE projection = %s AND position = %s",
        (projection, position),
    )


def aggregates_set_aside(
    cursor: Cursor, dialect: str, projections: Iterable[str], lock: str | None = None
) -> dict[str, set[UUID]]:
    """For each projection, the aggregates whose later events must wait behind a dead letter:
    one indexed query on a table that is empty on a good day. On PostgreSQL, the same round
    trip also takes the projections' rows of the `lock` table (the tracking table) for the
    transaction, so that a batch and a retry of dead letters never interleave; SQLite's BEGIN
    IMMEDIATE already holds the whole database."""
    names = list(projections)
    found: dict[str, set[UUID]] = {name: set() for name in names}
    if dialect == "postgresql":
        cursor.execute(
            (
                f"WITH locked AS (SELECT name FROM {lock} WHERE name = ANY(%s) FOR UPDATE) "
                if lock
                else ""
            )
            + f"SELECT projection, originator_id FROM {DEAD_LETTERS_TABLE}"
            " WHERE projection = ANY(%s)"
            + (" UNION ALL SELECT name, NULL FROM locked" if lock else ""),
            ([names] if lock else []) + [names],
        )
    else:
        marks = ", ".join(["%s"] * len(names))
        cursor.execute(
            f"SELECT DISTINCT projection, originator_id FROM {DEAD_LETTERS_TABLE}"
            f" WHERE projection IN ({marks})",
            names,
        )
    for projection, originator_id in cursor.fetchall():
        if originator_id is not None:
            found[projection].add(UUID(str(originator_id)))
    return found


def dead_letters(db: ReadDatabase, projection: str | None = None) -> list[DeadLetter]:
    where, params = ("WHERE projection = %s ", (projection,)) if projection else ("", ())
    rows = db.query(
        "SELECT projection, position, originator_id, originator_version, topic, reason, held,"
        f" attempts, failed_at FROM {DEAD_LETTERS_TABLE} {where}ORDER BY projection, position",
        params,
    )
    return [
        DeadLetter(
            str(name),
            int(position),
            UUID(str(originator_id)),
            int(version),
            str(topic),
            str(reason),
            bool(held),
            int(attempts),
            str(failed_at),
        )
        for name, position, originator_id, version, topic, reason, held, attempts, failed_at in rows
    ]


def counts(db: ReadDatabase) -> dict[str, int]:
    """Dead letters per projection (projections without any are absent)."""
    rows = db.query(f"SELECT projection, COUNT(*) FROM {DEAD_LETTERS_TABLE} GROUP BY projection")
    return {str(name): int(count) for name, count in rows}
