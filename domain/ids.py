"""Aggregate ids derived from DRx keys, so a repeated create collides instead of duplicating."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from uuid import UUID, uuid5

# Fixed forever: changing it would orphan every stored aggregate.
_NAMESPACE = UUID("6f1d8a52-3c0b-4a55-9a43-2f4c1b7e9d10")


# Each delivery asks for its ids several times on the way in; a uuid5 is a SHA-1.
@lru_cache(maxsize=16384)
def prescription_id(subject: str) -> UUID:
    return uuid5(_NAMESPACE, "prescription:" + subject)


@lru_cache(maxsize=16384)
def delivery_id(event_id: str) -> UUID:
    return uuid5(_NAMESPACE, "delivery:" + event_id)


def overdue_signal_id(subject: str, kind: str, request_id: str, opened_at: datetime) -> UUID:
    """One per request (a request id may come again, opened at another instant)."""
    key = "|".join((subject, kind, request_id, opened_at.astimezone(UTC).isoformat()))
    return uuid5(_NAMESPACE, "overdue:" + key)
