"""The PHI access log (HIPAA audit controls, 45 CFR 164.312(b)): one entry per answer that
carried patient or prescription data: when, which key, method, path, status, and the ids of the
prescriptions and patients it carried; no other patient data.

The table is append-only (the service only inserts; the audit seals chain every row). Entries
are written in batches, from a thread of each process, every `FLUSH_S`: a request does not wait
for a write of its own (measured in bench/access_log.py). On PostgreSQL the batches of every
process serialise on a transaction advisory lock (`_SERIAL`), so that ids become visible in the
order given, as the seals need. (A table lock did that before, in SHARE ROW EXCLUSIVE mode,
which also conflicts with the lock VACUUM and ANALYZE hold: each autovacuum of this busy table
held the writes off until the deadlock check cancelled it, and a VACUUM by hand, which is never
cancelled, for as long as it ran, until the backlog's limit turned the API's answers into 503s.
A batch from a process still running that code waits for these, and these for it: its INSERT's
ROW EXCLUSIVE lock conflicts with that mode.)

What that costs, chosen and written down: an entry is in the database within `FLUSH_S` of its
answer; a process killed outright (SIGKILL, power) loses at most the entries of its last
`FLUSH_S`. While the database cannot take them, entries wait in memory; once `BACKLOG_LIMIT`
wait, `accepting` is False and the API refuses answers that carry patient data (503) until the
log can be written again: no answer carries patient data unlogged for long.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.instants import sortable_instant
from infrastructure.database import ReadDatabase, insert_rows
from infrastructure.periodic import Periodic

log = logging.getLogger(__name__)

FLUSH_S = 0.2
BACKLOG_LIMIT = 100_000
# An entry's columns after its id (the seals hash them: infrastructure/seals.py).
COLUMNS = ("at", "key_name", "method", "path", "status", "prescription_ids", "patient_ids")
_COLUMNS = ", ".join(COLUMNS)
_TYPES = ("text", "text", "text", "text", "integer", "jsonb", "jsonb")
# Two int4 keys ("DRXA", the schema), apart from the saves' (migration 0018) and the bigint keys
# of the leadership, the seals and the migrations.
_SERIAL = "SELECT pg_advisory_xact_lock(1146247233, hashtext(current_schema()))"


@dataclass(frozen=True)
class Access:
    at: str  # RFC 3339, fixed width (sortable)
    key: str
    method: str
    path: str
    status: int
    prescription_ids: tuple[str, ...] = ()
    patient_ids: tuple[str, ...] = ()

    def row(self) -> tuple[object, ...]:
        return (
            self.at,
            self.key,
            self.method,
            self.path,
            self.status,
            json.dumps(sorted(set(self.prescription_ids))),
            json.dumps(sorted(set(self.patient_ids))),
        )


@dataclass(frozen=True)
class AccessFilter:
    patient_id: str | None = None
    prescription_id: str | None = None
    key: str | None = None
    since: datetime | None = None


class AccessLog:
    """This process's writer of the access log (see the module's docstring)."""

    def __init__(self, db: ReadDatabase, flush_s: float = FLUSH_S) -> None:
        self.db = db
        self._waiting: list[Access] = []
        self._guard = threading.Lock()
        self._writing = threading.Lock()  # one flush at a time keeps the entries in order
        self._flusher = Periodic("drx-access-log", flush_s, self.flush)
        self._failing = False

    def append(self, entry: Access) -> None:
        with self._guard:
            self._waiting.append(entry)

    @property
    def accepting(self) -> bool:
        """False while the log cannot keep up (the database away for long)."""
        return len(self._waiting) < BACKLOG_LIMIT

    def flush(self) -> int:
        """Write what waits now, in one transaction; return how many were written. On a failure
        the entries wait for the next flush, in their order."""
        with self._writing:
            with self._guard:
                batch, self._waiting = self._waiting, []
            if not batch:
                return 0
            try:
                self._write(batch)
            except Exception as exc:
                with self._guard:
                    self._waiting[:0] = batch
                if not self._failing:
                    log.warning("the access log cannot be written now (%s)", type(exc).__name__)
                self._failing = True
                return 0
            if self._failing:
                log.info("the access log is written again")
            self._failing = False
            return len(batch)

    def write_now(self, entry: Access) -> None:
        """Write one entry at once, raising when it cannot be written (a command writes its
        entry before it prints the data)."""
        with self._writing:
            self._write([entry])

    def _write(self, batch: list[Access]) -> None:
        with self.db.transaction() as cursor:
            if self.db.dialect == "postgresql":
                cursor.execute(_SERIAL)
            insert_rows(
                cursor,
                self.db.dialect,
                f"INSERT INTO drx_access_log ({_COLUMNS})",
                _TYPES,
                [entry.row() for entry in batch],
            )

    def start(self) -> None:
        self._flusher.start()

    def stop(self) -> None:
        """Stop the thread and write what waits (a clean shutdown loses nothing)."""
        self._flusher.stop()
        self.flush()


class AccessQueries:
    """`GET /audit/access` and `drx audit access`: the log, filtered, in id order."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def find(
        self, where: AccessFilter, limit: int, after: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        clauses, params = self._clauses(where)
        if after is not None:
            clauses.append("id > %s")
            params.append(after)
        sql = (
            f"SELECT id, {_COLUMNS} FROM drx_access_log"
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + " ORDER BY id LIMIT %s"
        )
        rows = self.db.query(sql, (*params, limit + 1))
        items = [_item(row) for row in rows[:limit]]
        return items, int(rows[limit - 1][0]) if len(rows) > limit else None

    def _clauses(self, where: AccessFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("prescription_ids", where.prescription_id),
            ("patient_ids", where.patient_id),
        ):
            if value is None:
                continue
            if self.db.dialect == "postgresql":
                clauses.append(f"{column} @> %s::jsonb")  # the GIN index answers it
                params.append(json.dumps([value]))
            else:
                # CASE, whose order SQLite keeps: json_each fails the whole query on a row
                # edited into text that is no JSON (which `drx audit verify` names).
                clauses.append(
                    f"CASE WHEN json_valid({column}) THEN"
                    f" EXISTS (SELECT 1 FROM json_each({column}) WHERE value = %s) END"
                )
                params.append(value)
        if where.key is not None:
            clauses.append("key_name = %s")
            params.append(where.key)
        if where.since is not None:
            clauses.append("at >= %s")
            params.append(sortable_instant(where.since))
        return clauses, params


def _item(row: tuple[Any, ...]) -> dict[str, Any]:
    _id, at, key, method, path, status, prescription_ids, patient_ids = row
    return {
        "at": at,
        "key": key,
        "method": method,
        "path": path,
        "status": status,
        "prescription_ids": _ids(prescription_ids),
        "patient_ids": _ids(patient_ids),
    }


def _ids(value: Any) -> list[str]:
    """A JSON array as stored: decoded by psycopg on PostgreSQL, text on SQLite. A value that
    is no array of strings (an edited row: `drx audit verify` names it) is shown as it is, as
    the one element, rather than making the whole log unreadable."""
    try:
        ids = json.loads(value) if isinstance(value, str | bytes) else value
    except (ValueError, RecursionError):
        ids = None
    if isinstance(ids, list) and all(isinstance(one, str) for one in ids):
        return ids
    return [f"(not a list of ids: {value!r})"]
