"""Queries over the read tables: prescriptions and deliveries, filtered, in keyset pages.

The read API's two busiest queries (a prescription's state, a page of the list) are built once,
as `Statement`s, and run either by `ReadQueries` in a thread or by `AsyncReadQueries` on a web
worker's event loop (`interfaces/http/fast_reads.py`): the same SQL either way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.instants import sortable_instant
from infrastructure.database import AsyncReadDatabase, ReadDatabase, Row, in_list
from infrastructure.read_models import row_key

_COMPARISONS = frozenset({"<", "<=", ">", ">="})


@dataclass(frozen=True)
class PrescriptionFilter:
    status: str | None = None
    patient_id: str | None = None
    pharmacy_ncpdp_id: str | None = None
    needs_review: bool | None = None
    updated_since: datetime | None = None
    prescription_id: str | None = None
    statuses: frozenset[str | None] | None = None  # any of them; None in it: no status yet
    # Each (comparison, instant) bounds when the last fact was recorded: updated_at > instant...
    updated: tuple[tuple[str, datetime], ...] = ()


@dataclass(frozen=True)
class StoredPrescription:
    """A row of rx_prescriptions: the state as the API's JSON text, and its columns."""

    prescription_id: str
    state: str
    patient_id: str | None
    updated_at: str  # when its last fact was recorded (the read tables' fixed-width UTC text)


@dataclass(frozen=True)
class Page:
    items: list[Any]
    last_key: Any | None  # the key to continue after, None on the last page
    # Each item's (prescription id, patient id), where the PHI access log wants them.
    subjects: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class ParkedGroup:
    """The parked deliveries of one reason."""

    reason: str
    count: int
    first_received_at: str  # the read tables' fixed-width UTC text
    last_received_at: str


_STORED = "SELECT prescription_id, state, patient_id, updated_at FROM rx_prescriptions"


@dataclass(frozen=True)
class Statement:
    """A query as the read database runs it."""

    sql: str
    params: tuple[Any, ...]
    # None: PostgreSQL may plan it once for any values (psycopg prepares a statement run five
    # times on a connection, and after five more the server may keep a generic plan); False:
    # planned for its values at every run, where the values decide the plan.
    prepare: bool | None = None


def prescription_statement(prescription_id: str) -> Statement:
    """The state as stored (JSON text in the API's shape) and its patient's id."""
    return Statement(
        "SELECT state, patient_id FROM rx_prescriptions WHERE prescription_id = %s",
        (prescription_id,),
    )


def prescriptions_statement(
    dialect: str, where: PrescriptionFilter, limit: int, after: str | None
) -> Statement:
    """A keyset page of rows by prescription id, one row more than `limit` (`keyset_page`)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("prescription_id", "status", "patient_id", "pharmacy_ncpdp_id"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if where.statuses is not None:
        clauses.append(_any_status(dialect, where.statuses, params))
    if where.needs_review is not None:
        clauses.append("needs_review = TRUE" if where.needs_review else "needs_review = FALSE")
    if where.updated_since is not None:
        clauses.append("updated_at >= %s")
        params.append(sortable_instant(where.updated_since))
    for comparison, moment in where.updated:
        if comparison not in _COMPARISONS:
            raise ValueError(f"not a comparison: {comparison}")
        clauses.append(f"updated_at {comparison} %s")
        params.append(sortable_instant(moment))
    if after is not None:
        clauses.append("prescription_id > %s")
        params.append(after)
    if where.updated_since is None and not where.updated:
        return _keyset(_STORED, clauses, params, "prescription_id", limit)
    # A bound on updated_at: the page's ids first, from an index alone (migration 0014): from
    # (updated_at, id) where the bound lets few rows through, their ids sorted, or by walking
    # (id, updated_at) where it lets many; then only the page's rows are read. Only the bound's
    # value says which. A generic plan cannot know it: it walks the ids, which for a recent
    # instant reads most of them (144 ms at a million prescriptions, forced with psql).
    # PostgreSQL keeps such a plan for a prepared statement only when its estimate costs no
    # more than the plans for the values (so far it costs more here: the limit is a parameter
    # too); this statement is planned for its value at every run, whatever the estimates say.
    ids = _keyset(
        "SELECT prescription_id FROM rx_prescriptions", clauses, params, "prescription_id", limit
    )
    # On PostgreSQL as an array: the page's rows come from the id index in its order, with no
    # join to sort, and about half the planning time of `IN (...)`.
    among = f"= ANY(ARRAY({ids.sql}))" if dialect == "postgresql" else f"IN ({ids.sql})"
    return Statement(
        f"{_STORED} WHERE prescription_id {among} ORDER BY prescription_id",
        ids.params,
        prepare=False,
    )


def _keyset(select: str, clauses: list[str], params: list[Any], key: str, limit: int) -> Statement:
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    return Statement(f"{select}{where} ORDER BY {key} LIMIT %s", (*params, limit + 1))


def keyset_page(rows: list[Row], limit: int) -> tuple[list[Row], Any | None]:
    """A keyset statement's rows as a page: at most `limit` rows, and the key (the first
    column) to continue after, None on the last page (the statement fetched one row more than
    asked, to learn whether there is a next page)."""
    return rows[:limit], rows[limit - 1][0] if len(rows) > limit else None


def _any_status(dialect: str, statuses: frozenset[str | None], params: list[Any]) -> str:
    named = sorted(s for s in statuses if s is not None)
    either = ["status IS NULL"] if None in statuses else []
    if named:
        clause, values = in_list(dialect, "status", named)
        either.append(clause)
        params.extend(values)
    return f"({' OR '.join(either)})" if either else "FALSE"


def _json_page(rows: list[Row], limit: int) -> Page:
    found, last_key = keyset_page(rows, limit)
    return Page(
        [str(state) for _, state, _, _ in found],
        last_key,
        [(prescription_id, patient) for prescription_id, _, patient, _ in found],
    )


class ReadQueries:
    """What the read API asks of the read tables."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def _run(self, statement: Statement) -> list[Row]:
        return self.db.query(statement.sql, statement.params, prepare=statement.prepare)

    def prescription_json(self, prescription_id: str) -> tuple[str, str | None] | None:
        """The state as stored (JSON text in the API's shape, served without re-encoding), and
        its patient's id."""
        rows = self._run(prescription_statement(prescription_id))
        return (str(rows[0][0]), rows[0][1]) if rows else None

    def stored_prescription(self, key: str | UUID) -> StoredPrescription | None:
        """One row, by prescription id or by aggregate id."""
        column, value = (
            ("aggregate_id", row_key(self.db.dialect, key))
            if isinstance(key, UUID)
            else ("prescription_id", key)
        )
        rows = self.db.query(f"{_STORED} WHERE {column} = %s", (value,))
        return StoredPrescription(*rows[0]) if rows else None

    def patients_latest(self, patient_id: str) -> StoredPrescription | None:
        """The patient's prescription whose last fact was recorded last: the one holding what
        DRx last said of the patient."""
        rows = self.db.query(
            f"{_STORED} WHERE patient_id = %s ORDER BY updated_at DESC, prescription_id LIMIT 1",
            (patient_id,),
        )
        return StoredPrescription(*rows[0]) if rows else None

    def prescriptions_json(self, where: PrescriptionFilter, limit: int, after: str | None) -> Page:
        """States as stored JSON text, ordered by prescription id: a page boundary never moves
        when facts arrive."""
        statement = prescriptions_statement(self.db.dialect, where, limit, after)
        return _json_page(self._run(statement), limit)

    def stored_prescriptions(
        self, where: PrescriptionFilter, limit: int, after: str | None
    ) -> tuple[list[StoredPrescription], str | None]:
        """Rows in keyset pages by prescription id, and the key to continue after."""
        statement = prescriptions_statement(self.db.dialect, where, limit, after)
        rows, last_key = keyset_page(self._run(statement), limit)
        return [StoredPrescription(*row) for row in rows], last_key

    def deliveries(
        self, status: str | None, limit: int, after: int | None, reason: str | None = None
    ) -> Page:
        """In arrival order (the notification id of each delivery's first event); `reason`
        the parked ones' reason."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("reason", reason)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if after is not None:
            clauses.append("seq > %s")
            params.append(after)
        statement = _keyset(
            "SELECT seq, event_id, type, subject, received_at, status, reason, conflicts"
            " FROM rx_deliveries",
            clauses,
            params,
            "seq",
            limit,
        )
        rows, last_key = keyset_page(self._run(statement), limit)
        items = [
            {
                "event_id": event_id,
                "type": type_,
                "subject": subject,
                "received_at": received_at,
                "status": status_,
                "reason": reason,
                "conflicts": conflicts,
            }
            for _, event_id, type_, subject, received_at, status_, reason, conflicts in rows
        ]
        return Page(items, last_key)

    def parked_groups(self) -> list[ParkedGroup]:
        """The parked deliveries by reason, the largest group first (read on the status
        index: only parked rows)."""
        rows = self.db.query(
            "SELECT reason, COUNT(*), MIN(received_at), MAX(received_at) FROM rx_deliveries"
            " WHERE status = 'parked' GROUP BY reason ORDER BY COUNT(*) DESC, reason"
        )
        return [
            ParkedGroup(str(reason), int(count), first, last) for reason, count, first, last in rows
        ]

    def delivery_ids_of(self, subject: str) -> list[str]:
        """The event ids of every stored delivery about a prescription."""
        rows = self.db.query("SELECT event_id FROM rx_deliveries WHERE subject = %s", (subject,))
        return [str(row[0]) for row in rows]

    def waiting_counts(self) -> dict[str, int]:
        """How many stored deliveries are parked and how many in conflict: a person's to look
        at (counted on the status index; processed ones, nearly all, are not read)."""
        rows = self.db.query(
            "SELECT status, COUNT(*) FROM rx_deliveries"
            " WHERE status IN ('parked', 'conflict') GROUP BY status"
        )
        counted = {str(status): int(count) for status, count in rows}
        return {"parked": counted.get("parked", 0), "conflict": counted.get("conflict", 0)}


class AsyncReadQueries:
    """The read API's two busiest queries, awaited on a web worker's event loop instead of run
    in a thread (`interfaces/http/fast_reads.py`): the same statements as `ReadQueries`'."""

    def __init__(self, db: AsyncReadDatabase) -> None:
        self.db = db

    async def _run(self, statement: Statement) -> list[Row]:
        return await self.db.query(statement.sql, statement.params, prepare=statement.prepare)

    async def prescription_json(self, prescription_id: str) -> tuple[str, str | None] | None:
        """As `ReadQueries.prescription_json`."""
        rows = await self._run(prescription_statement(prescription_id))
        return (str(rows[0][0]), rows[0][1]) if rows else None

    async def prescriptions_json(
        self, where: PrescriptionFilter, limit: int, after: str | None
    ) -> Page:
        """As `ReadQueries.prescriptions_json`."""
        statement = prescriptions_statement(self.db.dialect, where, limit, after)
        return _json_page(await self._run(statement), limit)
