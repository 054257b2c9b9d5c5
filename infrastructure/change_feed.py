"""The change feed as its readers see it (the API, the streams, the dispatcher): `rx_changes`,
one row per change, in position order, with the columns its filters use.

The projection that writes it is `change_projection.py`; this module imports none of the
domain's models, so that a process that only reads the feed (the dispatcher's) does not load
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from infrastructure.database import ReadDatabase, in_list
from infrastructure.read_tables import CHANGES


def channel_for(schema: str) -> str:
    """The NOTIFY channel of the feed in one schema (several services may share a database)."""
    return "drx_changes_" + "".join(c if c.isalnum() else "_" for c in schema.lower())[:40]


@dataclass(frozen=True)
class ChangeFilter:
    prescription_id: str | None = None
    patient_id: str | None = None
    types: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()

    def matches(self, row: FeedRow) -> bool:
        return (
            (self.prescription_id is None or row.prescription_id == self.prescription_id)
            and (self.patient_id is None or row.patient_id == self.patient_id)
            and (not self.types or row.type in self.types)
            and (not self.statuses or row.status in self.statuses)
        )


@dataclass(frozen=True)
class FeedRow:
    position: int
    type: str
    prescription_id: str
    patient_id: str | None
    status: str | None
    recorded_at: str  # RFC 3339, fixed width
    document: str  # the change's JSON, as stored

    @cached_property
    def sse(self) -> bytes:
        """The change as one Server-Sent Events message, encoded once for every stream that
        sends it (the JSON holds no line break: it is one data line)."""
        return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (
            self.position,
            self.type.encode(),
            self.document.encode(),
        )


class ChangeFeed:
    """What the feed's readers ask of `rx_changes` (the API, the streams, the dispatcher)."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def head(self) -> int:
        """The last position written (0 for an empty feed)."""
        rows = self.db.query(f"SELECT MAX(position) FROM {CHANGES.name}")  # noqa: S608
        return int(rows[0][0] or 0) if rows else 0

    def after(
        self, position: int, limit: int, where: ChangeFilter = ChangeFilter()
    ) -> list[FeedRow]:
        """Up to `limit` changes after `position` that match, in position order."""
        clauses, params = self._where(position, where)
        rows = self.db.query(
            "SELECT position, type, prescription_id, patient_id, status, recorded_at, document"  # noqa: S608
            f" FROM {CHANGES.name} WHERE {' AND '.join(clauses)} ORDER BY position LIMIT %s",
            (*params, limit),
        )
        return [FeedRow(int(p), *rest) for p, *rest in rows]

    def count_after(self, position: int, where: ChangeFilter, cap: int) -> int:
        """How many changes after `position` match (up to `cap`)."""
        clauses, params = self._where(position, where)
        rows = self.db.query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {CHANGES.name}"  # noqa: S608
            f" WHERE {' AND '.join(clauses)} LIMIT %s) AS counted",
            (*params, cap),
        )
        return int(rows[0][0]) if rows else 0

    def _where(self, position: int, where: ChangeFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = ["position > %s"]
        params: list[Any] = [position]
        for column in ("prescription_id", "patient_id"):
            value = getattr(where, column)
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        for column, values in (("type", where.types), ("status", where.statuses)):
            if values:
                clause, more = in_list(self.db.dialect, column, list(values))
                clauses.append(clause)
                params.extend(more)
        return clauses, params
