"""The application recorders the service uses (PostgreSQL's and SQLite's), on top of the
library's:

- PostgreSQL fails fast when the database is unreachable. The library retries a failed statement
  10 times, each waiting up to the pool's timeout: about 20 s before a webhook could answer 503
  and DRx's own retry take over. Here a statement gets one more try, after the pool has dropped
  every idle connection that no longer works (a restart or pg_terminate_backend breaks them
  all at once; without the check each would fail one batch in turn), and then the error
  surfaces. The pool reconnects promptly once the database is back (`database.tune_pool`).
- Both load a webhook batch's aggregates (its prescriptions and deliveries) in one query
  (`select_aggregates`, the port `domain.unit_of_work.AggregateLookup`), where the library
  would take one query per aggregate: each one's last snapshot, if it has one, and its events
  after it (`domain.prescription`). PostgreSQL's is `drx_select_heads` (migration 0013),
  which plans it without parallel workers whatever the statistics say.
- Both write a save's snapshots in the same transaction as its events (`writes_snapshots`:
  `Prescriptions.save` hands them over as the `snapshots` argument), so that a snapshot never
  stands without the events it folds, and delete the older snapshots of those prescriptions
  (only the last is ever read: PostgreSQL migration 0016, SQLite 0014).
- PostgreSQL saves in one round trip, by calling `drx_save` (migrations 0003, 0013, 0016, 0018):
  the library's statements (a lock that keeps notification ids in commit order, an advisory one
  since 0018 where the library locks the table; the NOTIFY; the INSERT) in one prepared call,
  where the library pipelines them in an explicit transaction (five round trips, measured
  0.6-0.9 ms of client CPU per save against 0.2 ms). The rows go as
  four array literals (`pg_arrays.py`) in bind parameters, where the library sends one array of
  a composite row type that psycopg dumps element by element in Python (per save of 40 rows,
  measured: psycopg's arrays 2.1-2.3 ms of client CPU and 2.0-2.1 ms of the server's; the
  literals 0.75-0.8 ms and 1.7-1.8 ms; one JSON text instead 1.2 ms and 3.7-3.9 ms: the server
  parses JSON slowly). Bind parameters, not literals in the text, because PostgreSQL logs the
  text of a statement that fails (a lost race on a prescription's version is routine), and the
  rows hold patient data and DRx's signatures; it does not log parameters on error by default.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

import psycopg.errors
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from infrastructure.database import tune_pool
from infrastructure.pg_arrays import columns

EVENTS_TABLE = "drx_events"
SAVE_FUNCTION = "drx_save"
SELECT_HEADS_FUNCTION = "drx_select_heads"
SNAPSHOTS_TABLE = "drx_snapshots"
SQLITE_SNAPSHOTS_TABLE = "stored_snapshots"

F = TypeVar("F", bound=Callable[..., Any])
_RETRY_PAUSE_S = 0.05


def _fail_fast(method: F) -> F:
    """One more try after a connection failure, once the pool has dropped its broken ones;
    none after a lock wait that timed out (the connection is fine, and a second wait would
    make DRX_POSTGRES_LOCK_TIMEOUT twice as long)."""

    @functools.wraps(method)
    def once_more(self: FailFastPostgresApplicationRecorder, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (InterfaceError, OperationalError) as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                raise
            self.datastore.pool.check()
            time.sleep(_RETRY_PAUSE_S)
            return method(self, *args, **kwargs)

    return once_more  # type: ignore[return-value]


def _undecorated(name: str) -> Any:
    return getattr(PostgresApplicationRecorder, name).__wrapped__


class FailFastPostgresApplicationRecorder(PostgresApplicationRecorder):
    writes_snapshots = True

    select_events = _fail_fast(_undecorated("select_events"))
    select_notifications = _fail_fast(_undecorated("select_notifications"))
    max_notification_id = _fail_fast(_undecorated("max_notification_id"))

    def __init__(self, datastore: PostgresDatastore, *args: Any, **kwargs: Any) -> None:
        # Before the library's constructor, which opens the pool (to register its types): a
        # pool's connections are made with the keywords it holds when they are made.
        tune_pool(datastore.pool, connect_timeout_s=datastore.pool.timeout)
        super().__init__(datastore, *args, **kwargs)
        if self.events_table_name != EVENTS_TABLE:
            msg = f"migrations 0003 and 0013 read and write {EVENTS_TABLE} only"
            raise ValueError(msg)
        # Rendered once: psycopg renders a composed statement again at every call.
        schema = Identifier(self.datastore.schema)
        self._insert_statement = (
            SQL(
                "SELECT * FROM {}.{}(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[], %s,"
                " %s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
            )
            .format(schema, Identifier(SAVE_FUNCTION))
            .as_bytes(None)
        )
        self._lock_wait = f"{self.datastore.lock_timeout}s"
        self._select_batch_statement = (
            SQL("SELECT * FROM {}.{}(%s::uuid[])")
            .format(schema, Identifier(SELECT_HEADS_FUNCTION))
            .as_bytes(None)
        )
        # The audit's check of the snapshots (`domain.audit`): each id's last snapshot, and
        # each id's events up to a version.
        self._select_snapshots_statement = (
            SQL(
                "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic,"
                " state FROM {}.{} WHERE originator_id = ANY(%s::uuid[])"
                " ORDER BY originator_id, originator_version DESC"
            )
            .format(schema, Identifier(SNAPSHOTS_TABLE))
            .as_bytes(None)
        )
        self._select_histories_statement = (
            SQL(
                "SELECT e.originator_id, e.originator_version, e.topic, e.state"
                " FROM unnest(%s::uuid[], %s::bigint[]) AS b(id, v)"
                " JOIN {}.{} e ON e.originator_id = b.id AND e.originator_version <= b.v"
                " ORDER BY e.originator_id, e.originator_version"
            )
            .format(schema, Identifier(EVENTS_TABLE))
            .as_bytes(None)
        )

    @_fail_fast
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredEvent] = (),
        **_: Any,
    ) -> Sequence[int]:
        if not stored_events:
            return []
        params = _columns(stored_events)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            curs.execute(
                self._insert_statement,
                [*params, self._lock_wait, *_columns(snapshots)],
                prepare=True,
            )
            return [row[0] for row in curs.fetchall()]

    @_fail_fast
    def select_aggregates(self, ids: Sequence[UUID]) -> list[StoredEvent]:
        """Each aggregate's last snapshot and its events after it (every event when it has
        none), by aggregate and version, in one round trip."""
        return self._stored(self._select_batch_statement, (list(ids),), prepare=True)

    @_fail_fast
    def select_last_snapshots(self, ids: Sequence[UUID]) -> list[StoredEvent]:
        """The last snapshot of each given aggregate that has one, in one round trip."""
        return self._stored(self._select_snapshots_statement, (list(ids),))

    @_fail_fast
    def select_histories(self, bounds: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of each (aggregate, version) up to that version, by aggregate and
        version, in one round trip."""
        ids, versions = [b[0] for b in bounds], [b[1] for b in bounds]
        return self._stored(self._select_histories_statement, (ids, versions))

    def _stored(
        self, statement: bytes, params: tuple[Any, ...], *, prepare: bool | None = None
    ) -> list[StoredEvent]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=prepare)
            return [
                StoredEvent(
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]


def _columns(stored: Sequence[StoredEvent]) -> list[str]:
    if not stored:
        return ["{}"] * 4
    return columns((e.originator_id, e.originator_version, e.topic, e.state) for e in stored)


def _hex(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


class BatchSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    writes_snapshots = True

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        snapshots: Sequence[StoredEvent] = kwargs.get("snapshots", ())
        if snapshots:
            c.executemany(
                f"INSERT OR IGNORE INTO {SQLITE_SNAPSHOTS_TABLE} VALUES (?, ?, ?, ?)",  # noqa: S608
                [
                    (_hex(s.originator_id), s.originator_version, s.topic, s.state)
                    for s in snapshots
                ],
            )
            c.executemany(  # only the last one is ever read (migration 0014)
                f"DELETE FROM {SQLITE_SNAPSHOTS_TABLE}"  # noqa: S608
                " WHERE originator_id = ? AND originator_version < ?",
                [(_hex(s.originator_id), s.originator_version) for s in snapshots],
            )
        return returning

    def select_aggregates(self, ids: Sequence[UUID]) -> list[StoredEvent]:
        """As PostgreSQL's: each aggregate's last snapshot and its events after it, in one
        query."""
        # Driven from the ids, so that each lookup is a range of the primary key.
        values = ", ".join(["(?)"] * len(ids))
        statement = (
            f"WITH ids(id) AS (VALUES {values}),"  # noqa: S608
            " heads AS (SELECT ids.id, (SELECT MAX(originator_version)"
            f" FROM {SQLITE_SNAPSHOTS_TABLE} s WHERE s.originator_id = ids.id) AS v FROM ids)"
            " SELECT s.originator_id, s.originator_version, s.topic, s.state"
            f" FROM heads h JOIN {SQLITE_SNAPSHOTS_TABLE} s"
            " ON s.originator_id = h.id AND s.originator_version = h.v"
            " UNION ALL"
            " SELECT e.originator_id, e.originator_version, e.topic, e.state"
            f" FROM heads h JOIN {self.events_table_name} e"
            " ON e.originator_id = h.id AND e.originator_version > COALESCE(h.v, 0)"
            " ORDER BY 1, 2"
        )
        return self._stored(statement, [i.hex for i in ids])

    def select_last_snapshots(self, ids: Sequence[UUID]) -> list[StoredEvent]:
        """As PostgreSQL's: the last snapshot of each given aggregate that has one."""
        values = ", ".join(["(?)"] * len(ids))
        return self._stored(
            f"WITH ids(id) AS (VALUES {values})"  # noqa: S608
            " SELECT s.originator_id, s.originator_version, s.topic, s.state FROM ids"
            f" JOIN {SQLITE_SNAPSHOTS_TABLE} s ON s.originator_id = ids.id"
            " AND s.originator_version = (SELECT MAX(originator_version)"
            f" FROM {SQLITE_SNAPSHOTS_TABLE} x WHERE x.originator_id = ids.id)",
            [i.hex for i in ids],
        )

    def select_histories(self, bounds: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """As PostgreSQL's: each aggregate's events up to the version given with it."""
        values = ", ".join(["(?, ?)"] * len(bounds))
        return self._stored(
            f"WITH bounds(id, v) AS (VALUES {values})"  # noqa: S608
            " SELECT e.originator_id, e.originator_version, e.topic, e.state FROM bounds b"
            f" JOIN {self.events_table_name} e ON e.originator_id = b.id"
            " AND e.originator_version <= b.v ORDER BY 1, 2",
            [x for aggregate_id, version in bounds for x in (aggregate_id.hex, version)],
        )

    def _stored(self, statement: str, params: list[Any]) -> list[StoredEvent]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            return [
                StoredEvent(
                    UUID(row["originator_id"]),
                    row["originator_version"],
                    row["topic"],
                    row["state"],
                )
                for row in cursor.fetchall()
            ]
