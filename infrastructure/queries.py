"""Queries over the read tables: prescriptions and deliveries, filtered, in keyset pages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.instants import sortable_instant
from infrastructure.database import ReadDatabase


@dataclass(frozen=True)
class PrescriptionFilter:
    status: str | None = None
    patient_id: str | None = None
    pharmacy_ncpdp_id: str | None = None
    needs_review: bool | None = None
    updated_since: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[Any]
    last_key: Any | None  # the key to continue after, None on the last page
    # Each item's (prescription id, patient id), where the PHI access log wants them.
    subjects: list[tuple[str, str | None]] = field(default_factory=list)


class ReadQueries:
    """What the read API asks of the read tables."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def prescription_json(self, prescription_id: str) -> tuple[str, str | None] | None:
        """The state as stored (JSON text in the API's shape, served without re-encoding), and
        its patient's id."""
        rows = self.db.query(
            "SELECT state, patient_id FROM rx_prescriptions WHERE prescription_id = %s",
            (prescription_id,),
        )
        return (str(rows[0][0]), rows[0][1]) if rows else None

    def prescriptions_json(self, where: PrescriptionFilter, limit: int, after: str | None) -> Page:
        """States as stored JSON text, ordered by prescription id: a page boundary never moves
        when facts arrive."""
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("status", "patient_id", "pharmacy_ncpdp_id"):
            value = getattr(where, column)
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if where.needs_review is not None:
            clauses.append("needs_review = TRUE" if where.needs_review else "needs_review = FALSE")
        if where.updated_since is not None:
            clauses.append("updated_at >= %s")
            params.append(sortable_instant(where.updated_since))
        if after is not None:
            clauses.append("prescription_id > %s")
            params.append(after)
        rows, last_key = self._page(
            "SELECT prescription_id, state, patient_id FROM rx_prescriptions",
            clauses,
            params,
            "prescription_id",
            limit,
        )
        return Page(
            [str(state) for _, state, _ in rows],
            last_key,
            [(str(prescription_id), patient) for prescription_id, _, patient in rows],
        )

    def deliveries(self, status: str | None, limit: int, after: int | None) -> Page:
        """In arrival order (the notification id of each delivery's first event)."""
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = %s")
            params.append(status)
        if after is not None:
            clauses.append("seq > %s")
            params.append(after)
        rows, last_key = self._page(
            "SELECT seq, event_id, type, subject, received_at, status, reason, conflicts"
            " FROM rx_deliveries",
            clauses,
            params,
            "seq",
            limit,
        )
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

    def _page(
        self, select: str, clauses: list[str], params: list[Any], key: str, limit: int
    ) -> tuple[list[Any], Any | None]:
        """One keyset page (the rows, the key to continue after), fetching one row more than
        asked to learn whether there is a next page."""
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self.db.query(f"{select}{where} ORDER BY {key} LIMIT %s", (*params, limit + 1))
        return rows[:limit], rows[limit - 1][0] if len(rows) > limit else None

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
