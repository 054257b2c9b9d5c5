"""Keyset pages: a page's `next_cursor` is its last key, and `cursor=` that key starts the next
page right after it (as Stripe's `starting_after` does), so a new row never shifts a page. The
key is plain, not an opaque token, so that the OpenAPI document can say exactly which cursors
are valid: a prescription id for prescriptions, a position (digits) for deliveries. An empty
`cursor=` is the first page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar.params import QueryParameter

from interfaces.http.errors import ProblemError

_NO_NUL = "^[^\\u0000]*$"
PrescriptionCursor = Annotated[
    str | None,
    QueryParameter(
        description="the next_cursor of the previous page: the prescription id it ended with",
        max_length=200,
        pattern=_NO_NUL,
    ),
]
# Positions are PostgreSQL bigints: up to 18 digits is always one.
DeliveryCursor = Annotated[
    str | None,
    QueryParameter(
        description="the next_cursor of the previous page: the position it ended at",
        pattern="^(|0|[1-9][0-9]{0,17})$",
    ),
]
# An id in a query: the service refuses U+0000 anywhere in a path or query (paths.py).
QueryId = Annotated[str | None, QueryParameter(max_length=200, pattern=_NO_NUL)]
Instant = Annotated[
    str | None,
    QueryParameter(
        description="an RFC 3339 timestamp with its offset", schema_extra={"format": "date-time"}
    ),
]


def prescription_cursor(cursor: str | None) -> str | None:
    return cursor or None


def delivery_cursor(cursor: str | None) -> int | None:
    """The position, or None for the first page (the pattern above let through only digits)."""
    if not cursor:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise ProblemError(400, "invalid_parameter", "cursor is not a position of this list")
    return int(cursor)


def next_cursor(key: object) -> str | None:
    return None if key is None else str(key)


def parse_instant(name: str, value: str) -> datetime:
    """An RFC 3339 timestamp with its offset, or a 400 that names the parameter."""
    try:
        moment: datetime | None = datetime.fromisoformat(value.upper())  # RFC 3339: t, z too
        if moment is not None and moment.tzinfo is not None:
            moment.astimezone(UTC)  # 0001-01-01T00:00:00+01:00 has no UTC instant
    except (ValueError, OverflowError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ProblemError(
            400,
            "invalid_parameter",
            f"{name} must be an RFC 3339 timestamp with an offset, e.g. 2025-03-04T15:22:10Z",
        )
    return moment
