"""Aggregate ids derived from DRx keys, so a repeated create collides instead of duplicating."""

from __future__ import annotations

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
