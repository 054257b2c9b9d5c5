"""Opaque keyset cursors: the last key of a page, so the next page starts right after it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar.params import QueryParameter

from interfaces.http.errors import ProblemError

Cursor = Annotated[
    str | None,
    QueryParameter(description="opaque: the next_cursor of the previous page"),
]
Instant = Annotated[
    str | None,
    QueryParameter(
        description="an RFC 3339 timestamp with its offset", schema_extra={"format": "date-time"}
    ),
]


def encode_cursor(key: Any) -> str | None:
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps({"after": key}).encode()).decode().rstrip("=")


# Keys are positions in the store (PostgreSQL bigint, SQLite INTEGER) or ids (1-200 chars).
_LARGEST_KEY = 2**63 - 1


def decode_cursor(cursor: str | None, kind: type) -> Any:
    """The key a cursor of this API holds, or a 400. An empty `cursor=` is the first page."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
    except (ValueError, KeyError, TypeError):
        key = None
    if (
        not isinstance(key, kind)
        or isinstance(key, bool)
        or (isinstance(key, int) and not 0 <= key <= _LARGEST_KEY)
        or (isinstance(key, str) and (not 0 < len(key) <= 200 or "\x00" in key))
    ):
        raise ProblemError(400, "invalid_parameter", "cursor is not one this API issued")
    return key


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
