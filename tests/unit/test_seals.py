"""The seals' pure part: the encoding, the chain, the walk's findings, the checkpoint's document
and message, and what a checkpoint says about a walked store."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.seals import (
    ACCESS,
    EVENTS,
    GENESIS,
    Checkpoint,
    CheckpointFormatError,
    Head,
    canonical_record,
    checkpoint_problems,
    digest,
    encode,
    link,
    read_checkpoint,
    seal,
    walk,
)

TOPIC = "domain.prescription:Prescription.FactRecorded"
ORIGINATORS = [uuid.UUID(int=n + 1).bytes for n in range(3)]


def event(position: int, originator: int = 0, version: int = 1, state: bytes = b"{}"):
    return (position, ORIGINATORS[originator], version, TOPIC, state)


# Positions with a gap (4 and 5 never used), as PostgreSQL's notification ids may have.
ITEMS = [event(p, p % 3, p, f'{{"n":{p}}}'.encode()) for p in (1, 2, 3, 6, 7, 8)]
SEALS = seal(EVENTS, GENESIS, ITEMS)


def findings(report) -> list[tuple[str, str]]:
    return [(f.where, f.what.split(":")[0]) for f in report.findings]


def name(position: int, originator: int, version: int) -> str:
    return f"event {position} ({uuid.UUID(bytes=ORIGINATORS[originator])} v{version})"


values = st.one_of(
    st.none(),
    st.binary(max_size=8),
    st.text(max_size=8),
    st.integers(-9, 9),
    st.floats(allow_nan=False),  # no row of ours holds one; an edited SQLite row may
)
contents = st.tuples(st.integers(-3, 3), st.lists(values, max_size=4).map(tuple))


@given(contents, contents)
def test_two_different_items_never_encode_alike(a, b):
    if a != b:
        assert encode(*a) != encode(*b)


def test_the_encoding_tells_text_from_bytes_and_where_values_split():
    assert encode(1, ("ab", "c")) != encode(1, ("a", "bc"))
    assert encode(1, ("a",)) != encode(1, (b"a",))
    assert encode(1, (None,)) != encode(1, (b"",))
    assert encode(1, (1,)) != encode(2, (1,))


def test_each_seal_row_chains_to_the_one_before():
    previous = GENESIS
    for item, row in zip(ITEMS, SEALS, strict=True):
        position, originator, version, item_digest, chain = row
        assert (position, originator, version) == item[:3]
        assert item_digest == digest(position, item[1:])
        assert chain == link(previous, item_digest)
        previous = chain


def test_sealing_in_two_batches_gives_the_chain_of_one():
    first = seal(EVENTS, GENESIS, ITEMS[:2])
    assert first + seal(EVENTS, first[-1][-1], ITEMS[2:]) == SEALS


def test_an_untouched_sequence_verifies_and_marks_its_checkpoints():
    report = walk(EVENTS, ITEMS, SEALS, marks=[3, 8])
    assert report.findings == []
    assert (report.items, report.sealed, report.unsealed, report.last_sealed) == (6, 6, 0, 8)
    assert report.marks[3].chain == SEALS[2][-1]
    assert (report.marks[3].items, report.marks[3].sealed) == (3, 3)
    assert report.marks[8].chain == SEALS[-1][-1]


def test_items_past_the_last_seal_are_not_yet_sealed_not_damage():
    report = walk(EVENTS, [*ITEMS, event(9), event(12)], SEALS)
    assert report.findings == []
    assert report.unsealed == 2


def test_a_changed_item_is_named_alone():
    items = list(ITEMS)
    items[2] = (*items[2][:4], b'{"n":"tampered"}')
    assert findings(walk(EVENTS, items, SEALS)) == [(name(3, 0, 3), "changed")]


def test_a_removed_item_is_named_by_what_was_sealed():
    items = [item for item in ITEMS if item[0] != 6]
    assert findings(walk(EVENTS, items, SEALS)) == [(name(6, 0, 6), "removed")]


def test_two_swapped_items_are_both_named_with_what_stood_there():
    items = list(ITEMS)
    items[1], items[2] = (2, *ITEMS[2][1:]), (3, *ITEMS[1][1:])
    report = walk(EVENTS, items, SEALS)
    assert findings(report) == [(name(2, 0, 3), "replaced"), (name(3, 2, 2), "replaced")]
    assert report.findings[0].what == (
        f"replaced: {uuid.UUID(bytes=ORIGINATORS[2])} v2 was sealed at this position "
        "(moved, reordered or replaced)"
    )


def test_an_item_inserted_before_the_last_seal_is_named():
    items = sorted([*ITEMS, event(5, 1, 99)])
    report = walk(EVENTS, items, SEALS)
    assert findings(report) == [(name(5, 1, 99), "inserted")]
    assert report.unsealed == 0


def test_an_item_removed_with_its_seal_breaks_the_chain_at_the_next_seal():
    items = [item for item in ITEMS if item[0] != 3]
    seals = [row for row in SEALS if row[0] != 3]
    assert findings(walk(EVENTS, items, seals)) == [
        ("seal of event 6", "the seal chain breaks here")
    ]


def test_a_removed_seal_leaves_its_item_unsealed_and_the_chain_broken():
    seals = [row for row in SEALS if row[0] != 3]
    assert findings(walk(EVENTS, ITEMS, seals)) == [
        (name(3, 0, 3), "inserted"),
        ("seal of event 6", "the seal chain breaks here"),
    ]


def test_a_seal_rewritten_to_match_a_changed_item_breaks_the_chain():
    items = list(ITEMS)
    items[2] = (*items[2][:4], b"tampered")
    seals = list(SEALS)
    seals[2] = (*seals[2][:3], digest(3, items[2][1:]), seals[2][4])
    assert findings(walk(EVENTS, items, seals)) == [
        ("seal of event 3", "the seal chain breaks here")
    ]


def test_access_rows_have_no_identity_and_are_named_by_id():
    rows = [(1, canonical_record({"path": "/a"})), (2, canonical_record({"path": "/b"}))]
    seals = seal(ACCESS, GENESIS, rows)
    assert [len(row) for row in seals] == [3, 3]
    assert walk(ACCESS, rows, seals).findings == []
    edited = [rows[0], (2, canonical_record({"path": "/c"}))]
    assert findings(walk(ACCESS, edited, seals)) == [("access-log row 2", "changed")]
    assert findings(walk(ACCESS, rows[:1], seals)) == [("access-log row 2", "removed")]


def test_a_record_is_canonical_whatever_its_key_order_and_spacing():
    assert canonical_record(json.loads('{"b": [1, 2], "a": "é"}')) == canonical_record(
        json.loads('{"a":"é","b":[1,2]}')
    )
    assert canonical_record({"a": "é"}) == '{"a":"é"}'.encode()


def problems(checkpoint: Checkpoint, items=ITEMS, seals=SEALS) -> list[str]:
    reports = {
        "events": walk(EVENTS, items, seals, [checkpoint.events.position]),
        "access": walk(ACCESS, [], [], [checkpoint.access.position]),
    }
    return checkpoint_problems(checkpoint, reports)


CHECKPOINT = Checkpoint(
    at="2026-12-01T08:00:00Z",
    events=Head(8, 6, SEALS[-1][-1].hex()),
    access=Head(0, 0, GENESIS.hex()),
)


def test_a_checkpoint_of_the_store_as_it_is_holds():
    assert problems(CHECKPOINT) == []
    earlier = replace(CHECKPOINT, events=Head(3, 3, SEALS[2][-1].hex()))
    assert problems(earlier, [*ITEMS, event(9)]) == []


def test_a_checkpoint_finds_seals_rewritten_after_it():
    items = list(ITEMS)
    items[2] = (*items[2][:4], b"tampered")
    rewritten = seal(EVENTS, SEALS[1][-1], items[2:])
    seals = SEALS[:2] + rewritten
    assert walk(EVENTS, items, seals).findings == []  # the rewrite is consistent...
    assert problems(CHECKPOINT, items, seals) == [  # ...but not what was checkpointed
        "events: the stored seal chain at position 8 differs from its digest: seal rows up to "
        "there were rewritten or removed"
    ]


def test_a_checkpoint_finds_a_store_truncated_with_its_seals():
    assert problems(CHECKPOINT, ITEMS[:4], SEALS[:4]) == [
        "events: truncated: it sealed 6 events up to position 8; the seals end at position 6, "
        "and the store holds 4 up to there"
    ]
    assert problems(CHECKPOINT, ITEMS[:4], []) == [
        "events: truncated: it sealed 6 events up to position 8; the seals end at position 0, "
        "and the store holds 4 up to there"
    ]


def test_a_checkpoint_finds_a_count_that_differs_and_a_seal_that_is_missing():
    assert problems(replace(CHECKPOINT, events=Head(8, 7, SEALS[-1][-1].hex()))) == [
        "events: 6 are sealed up to position 8, where it sealed 7"
    ]
    assert problems(replace(CHECKPOINT, events=Head(5, 3, SEALS[2][-1].hex()))) == [
        "events: there is no seal at its position 5: seal rows were removed"
    ]


def test_a_checkpoint_of_nothing_sealed_holds_only_with_the_genesis_digest():
    empty = replace(CHECKPOINT, events=Head(0, 0, GENESIS.hex()))
    assert problems(empty, [], []) == []
    assert problems(replace(empty, events=Head(0, 0, "ab" * 32)), [], []) == [
        "events: it seals nothing, yet has a digest"
    ]


def test_the_document_reads_back_and_has_the_contracts_fields():
    signed = replace(CHECKPOINT, public_key="cGs=", signature="c2ln")
    document = signed.document()
    assert list(document) == [
        "position",
        "events",
        "digest",
        "at",
        "public_key",
        "signature",
        "access",
    ]
    assert document["access"] == {"position": 0, "entries": 0, "digest": GENESIS.hex()}
    assert Checkpoint.from_document(json.loads(json.dumps(document))) == signed


def test_the_message_covers_everything_but_the_signature():
    keyed = replace(CHECKPOINT, public_key="cGs=")
    message = keyed.message()
    assert message.startswith(b"drx-audit-checkpoint/1\n")
    assert json.loads(message.split(b"\n", 1)[1]) == {
        k: v for k, v in keyed.document().items() if k != "signature"
    }
    assert replace(keyed, signature="c2ln").message() == message
    for changed in (
        replace(keyed, at="2026-12-01T08:00:01Z"),
        replace(keyed, public_key="cGw="),
        replace(keyed, events=Head(8, 6, "00" * 32)),
        replace(keyed, access=Head(1, 1, "00" * 32)),
    ):
        assert changed.message() != message


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.pop("digest"), "`digest` is missing or not 64 hex digits"),
        (lambda d: d.update(position=-1), "`position` is missing or not a whole number"),
        (lambda d: d.update(position=2**63), "`position` is missing or not a whole number"),
        (lambda d: d["access"].update(position=2**64), "`access.position` is missing"),
        (lambda d: d.update(events=True), "`events` is missing or not a whole number"),
        (lambda d: d.update(at=3), "`at` is missing or not a string"),
        (lambda d: d.update(signature=1), "`signature` is neither a string nor null"),
        (lambda d: d.pop("access"), "`access` is missing or not an object"),
        (lambda d: d["access"].pop("entries"), "`access.entries` is missing"),
        (lambda d: d["access"].update(digest="XY" * 32), "`access.digest` is missing"),
    ],
)
def test_a_document_that_is_not_a_checkpoint_is_refused_saying_why(edit, problem):
    document = json.loads(json.dumps(CHECKPOINT.document()))
    edit(document)
    with pytest.raises(CheckpointFormatError, match=problem.replace("`", ".").replace("(", ".")):
        Checkpoint.from_document(document)
    with pytest.raises(CheckpointFormatError, match="not a JSON object"):
        Checkpoint.from_document([document])


def test_a_text_nested_too_deep_for_the_parser_is_no_checkpoint():
    with pytest.raises(CheckpointFormatError, match="it is not JSON"):
        read_checkpoint("[" * 100_000 + "]" * 100_000)


def test_a_value_no_row_of_ours_holds_is_sealed_apart_from_every_other():
    """SQLite keeps what an edit writes: a REAL where the state's bytes stood, bytes in an access
    row's text column. They encode (the walk names the item) instead of failing the pass."""
    assert encode(1, (1.5,)) != encode(1, (1,))
    assert encode(1, (1.5,)) != encode(1, ("1.5",))
    record = canonical_record({"status": b"\x00\xff"})
    assert record != canonical_record({"status": "b'\\x00\\xff'"})
