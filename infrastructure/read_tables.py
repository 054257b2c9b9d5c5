"""The read tables, described once: their names and columns, which column names a row to a
person, and which a rebuild compares. The read models write them, the queries read them, the
rebuild fills and compares fresh copies of them. (Their DDL is in `migrations/`, as it was
released; a new column there is a new column here.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TRACKING_TABLE = "drx_projection_tracking"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # PostgreSQL's, for the array literals a batch of rows is written as
    compared: bool = True  # compared by `drx projections rebuild --verify`


@dataclass(frozen=True)
class ReadTable:
    name: str
    columns: tuple[Column, ...]
    identity: str  # the column that names a row to a person (and orders a comparison)
    key: str = "aggregate_id"  # one row per aggregate
    json_column: str | None = None  # compared field by field
    # The column holding the prescription id a row is about (what showing it carries, for
    # the PHI access log), among the compared ones.
    prescription_column: str = "prescription_id"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(c.sql_type for c in self.columns)

    @property
    def compared(self) -> tuple[str, ...]:
        """The identity first, then what a rebuild must reproduce."""
        rest = [c.name for c in self.columns if c.compared and c.name != self.identity]
        return (self.identity, *rest)

    def about(self, row: Sequence[object]) -> tuple[str | None, str | None]:
        """The prescription id and patient id of a row read in the compared columns' order
        (None where the table has no such column)."""
        names = self.compared

        def value(column: str) -> str | None:
            found = row[names.index(column)] if column in names else None
            return None if found is None else str(found)

        return value(self.prescription_column), value("patient_id")

    def insert(self, table: str | None = None) -> str:
        return f"INSERT INTO {table or self.name} ({', '.join(self.names)})"

    def on_conflict_update(self, columns: Sequence[str]) -> str:
        sets = ", ".join(f"{name} = excluded.{name}" for name in columns)
        return f"ON CONFLICT ({self.key}) DO UPDATE SET {sets}"


PRESCRIPTIONS = ReadTable(
    "rx_prescriptions",
    (
        Column("aggregate_id", "uuid", compared=False),
        Column("prescription_id", "text"),
        Column("status", "text"),
        Column("patient_id", "text"),
        Column("pharmacy_ncpdp_id", "text"),
        Column("needs_review", "boolean"),
        Column("updated_at", "text"),
        Column("state", "text"),  # the state as the API's JSON, served as stored
        Column("fold", "text", compared=False),  # where the state's fold stands: its last fact
    ),
    identity="prescription_id",
    json_column="state",
)

DELIVERIES = ReadTable(
    "rx_deliveries",
    (
        Column("aggregate_id", "uuid", compared=False),
        Column("event_id", "text"),
        Column("seq", "bigint"),  # the notification id of its first event: arrival order
        Column("type", "text"),
        Column("subject", "text"),
        Column("received_at", "text"),
        Column("status", "text"),
        Column("reason", "text"),
        Column("conflicts", "integer"),
    ),
    identity="event_id",
    prescription_column="subject",
)

CHANGES = ReadTable(
    "rx_changes",
    (
        Column("position", "bigint"),  # from the stored event's notification id (domain/changes)
        Column("type", "text"),
        Column("aggregate_id", "uuid", compared=False),  # the prescription's
        Column("prescription_id", "text"),
        Column("patient_id", "text"),
        Column("status", "text"),  # the state's status after the change
        Column("recorded_at", "text"),
        Column("document", "text"),  # the change as the API's JSON, served as stored
    ),
    identity="position",
    key="position",
    json_column="document",
)

# Where the change feed's fold of each prescription stands (its last state, as its last
# prescription.changed carried it), and which of its open requests are due or signalled.
CHANGE_HEADS = ReadTable(
    "rx_change_heads",
    (
        Column("aggregate_id", "uuid", compared=False),
        Column("prescription_id", "text"),
        Column("state", "text"),
        Column("fold", "text", compared=False),
        Column("signalled", "text"),  # the open requests already signalled overdue, as JSON
        Column("due_from", "text"),  # the earliest opened_at of its open, unsignalled requests
    ),
    identity="prescription_id",
    json_column="state",
)

# Each projection's tables, by the projection's name.
TABLES: dict[str, tuple[ReadTable, ...]] = {
    "prescriptions": (PRESCRIPTIONS,),
    "deliveries": (DELIVERIES,),
    "changes": (CHANGES, CHANGE_HEADS),
}
