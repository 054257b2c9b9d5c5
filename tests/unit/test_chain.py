"""The chain's hash is the canonical JSON of the whole fact object, whichever way it is built:
`fact_hash` splices the fact's stored text in, and must give what encoding the object gives, for
every hash already stored to keep verifying."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.chain import fact_hash
from domain.fact_data import canonical_json
from domain.facts import Fact
from domain.instants import format_instant
from interfaces.drx.translator import parse_envelope, read_fact
from tests.helpers import EXAMPLES


def reference_hash(
    previous: str, subject: str, number: int, fact: Fact, recorded_at: datetime
) -> str:
    """The chain's definition, written out: the object, encoded whole."""
    content = canonical_json(
        {
            "prescription_id": subject,
            "number": number,
            "event_id": fact.event_id,
            "type": fact.drx_type,
            "occurred_at": format_instant(fact.occurred_at),
            "sequence": fact.sequence,
            "data": json.loads(fact.text),
            "correlation": dict(fact.correlation),
            "recorded_at": recorded_at.isoformat(),
        }
    )
    return hashlib.sha256(f"{previous}\n{content}".encode()).hexdigest()


def example_facts() -> list[Fact]:
    facts = []
    for path in EXAMPLES:
        body = path.read_bytes()
        fact = read_fact(parse_envelope(body), body)
        assert isinstance(fact, Fact), path
        facts.append(fact)
    return facts


FACTS = example_facts()
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    fact=st.sampled_from(FACTS),
    subject=TEXT,
    event_id=TEXT,
    number=st.integers(1, 10**6),
    sequence=st.integers(0, 10**9),
    correlation=st.dictionaries(TEXT, TEXT | st.none(), max_size=3),
    extra=st.dictionaries(TEXT, JSON, max_size=3),
    previous=st.sampled_from(["", "ab" * 32]),
    seconds=st.integers(0, 10**9),
)
def test_the_spliced_hash_is_the_hash_of_the_whole_object(
    fact, subject, event_id, number, sequence, correlation, extra, previous, seconds
):
    """Over facts made from DRx payloads and facts read back from stored texts that hold more
    than the domain reads (what earlier versions stored: DRx's own words, nulls included)."""
    recorded_at = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=7)
    stored = canonical_json({**extra, **json.loads(fact.text)})
    for candidate in (
        Fact(event_id, fact.kind, fact.occurred_at, sequence, fact.data, correlation),
        Fact.read(event_id, fact.kind, fact.occurred_at, sequence, stored, correlation),
    ):
        assert fact_hash(previous, subject, number, candidate, recorded_at) == reference_hash(
            previous, subject, number, candidate, recorded_at
        )


@pytest.mark.parametrize("fact", FACTS, ids=lambda f: str(f.kind))
def test_a_hash_covers_every_part_of_the_fact(fact):
    recorded_at = datetime(2025, 1, 1, tzinfo=UTC)

    def hash_of(previous="", subject="rx", number=1, at=recorded_at, **changed):
        return fact_hash(previous, subject, number, replace(fact, **changed), at)

    base = hash_of()
    changed = [
        hash_of(previous="x"),
        hash_of(subject="rx2"),
        hash_of(number=2),
        hash_of(at=recorded_at + timedelta(microseconds=1)),
        hash_of(event_id=fact.event_id + "x"),
        hash_of(sequence=fact.sequence + 1),
        hash_of(correlation={**fact.correlation, "request_id": "r9"}),
        hash_of(text=fact.text[:-1] + ',"z":1}'),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
