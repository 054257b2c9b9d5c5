"""The tamper-evident chain of a prescription's facts: each fact's hash covers a canonical form of
its content, its place, when it was recorded, and the hash of the fact before it."""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.fact_data import canonical_json
from domain.facts import Fact
from domain.instants import format_instant

GENESIS = ""  # the "previous hash" of a prescription's first fact


def fact_hash(previous: str, subject: str, number: int, fact: Fact, recorded_at: datetime) -> str:
    """SHA-256 of the previous hash and the canonical JSON (`canonical_json`) of the fact's
    content and place: `{"correlation", "data", "event_id", "number", "occurred_at",
    "prescription_id", "recorded_at", "sequence", "type"}`, in that (sorted) order. The fact's
    data goes in as its text, which is already canonical, instead of being parsed and encoded
    again; `tests/unit/test_chain.py` checks the result against the whole object encoded."""
    content = "".join(
        (
            '{"correlation":',
            canonical_json(fact.correlation),
            ',"data":',
            fact.text,
            ',"event_id":',
            _string(fact.event_id),
            ',"number":',
            str(int(number)),
            ',"occurred_at":',
            _string(format_instant(fact.occurred_at)),
            ',"prescription_id":',
            _string(subject),
            ',"recorded_at":',
            _string(recorded_at.isoformat()),
            ',"sequence":',
            str(int(fact.sequence)),
            ',"type":',
            _string(fact.drx_type),
            "}",
        )
    )
    return hashlib.sha256(f"{previous}\n{content}".encode()).hexdigest()


# A JSON string as `json.dumps(text, ensure_ascii=False)` writes it (the function it calls).
_string = json.encoder.encode_basestring


@dataclass(frozen=True)
class Link:
    """One stored fact as the chain sees it: its number as stored, and its stored hash."""

    number: int
    recorded_at: datetime
    fact: Fact
    hash: str


class ChainVerifier:
    """Checks a prescription's stored facts one at a time, in stored order. Each hash is checked
    against its predecessor's *stored* hash, so an altered fact is named alone, not every fact
    after it; a missing or moved fact shows as a number out of place."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._previous = GENESIS
        self._expected_number = 1

    def check(self, link: Link) -> str | None:
        expected, self._expected_number = self._expected_number, self._expected_number + 1
        previous, self._previous = self._previous, link.hash
        if link.number != expected:
            return (
                f"stored as fact {link.number} where fact {expected} should be: "
                "a fact is missing or out of order"
            )
        if not link.hash:
            return "recorded before hash chaining: not covered by the chain"
        if fact_hash(previous, self.subject, link.number, link.fact, link.recorded_at) != link.hash:
            return "its content, time or place differs from what was recorded"
        return None


def chain_problems(subject: str, links: Sequence[Link]) -> list[tuple[Link, str]]:
    """Each stored fact that breaks the chain, with what is wrong."""
    verifier = ChainVerifier(subject)
    found = [(link, verifier.check(link)) for link in links]
    return [(link, problem) for link, problem in found if problem is not None]
