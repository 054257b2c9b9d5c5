"""Sealed checkpoints over the whole store, the pure part: the chain, the walk that checks the
stored items against their seals, and the checkpoint's canonical message.

Two *sequences* are sealed: every stored event in notification order (`EVENTS`), and every row
of the PHI access log in id order (`ACCESS`). Each item is sealed once, in position order, by a
seal row: what it was (an event's originator id and version), its *digest* (SHA-256 of its
position and content, `encode`) and the *chain* (SHA-256 of the chain before it and its
digest, `link`). A *checkpoint* is each sequence's head (last sealed position, number of seal
rows, chain there) at a moment, signed when a key is configured.

The walk (`walk`) merges a sequence's items and seal rows by position and checks each link from
the previous *stored* chain, so that each damaged item is named on its own and the items after
it still verify: changed, replaced (another event stands where one was sealed: moved, reordered
or replaced), removed (a seal with no item), inserted (an unsealed item before the last seal),
and a broken seal chain (seal rows removed or rewritten). Each checkpoint is then held against
the chain the walk found at its position (`checkpoint_problems`), which catches seal rows
rewritten to match an edited item, and a store cut short with its seals.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

GENESIS = bytes(32)  # the chain before a sequence's first item
CHECKPOINT_VERSION = "drx-audit-checkpoint/1"

# What a stored item's content is made of, as its table gives it back.
Value = bytes | str | int | None
# An item: its position, then its content (the identity first: `SequenceKind.identity_width`).
Item = tuple[int, *tuple[Value, ...]]
# A seal row: position, the item's identity, its digest, the chain up to it.
SealRow = tuple[Any, ...]

_sha256 = hashlib.sha256
_int64 = struct.Struct(">q").pack
_tagged = struct.Struct(">cq").pack  # a tag, then a length or an integer


@dataclass(frozen=True)
class SequenceKind:
    """One sealed sequence: `name` keys its seal rows and its part of a checkpoint; the first
    `identity_width` values of an item's content say what it is (and are kept in its seal, so
    that a removed item can be named)."""

    name: str
    noun: str
    plural: str
    identity_width: int

    def what(self, identity: Sequence[Any]) -> str:
        """What an item with this identity is (an event's originator id and version)."""
        originator, version = identity
        return f"{_originator_text(originator)} v{version}"

    def describe(self, position: int, identity: Sequence[Any]) -> str:
        if not identity:
            return f"{self.noun} {position}"
        return f"{self.noun} {position} ({self.what(identity)})"


EVENTS = SequenceKind("events", "event", "events", 2)
ACCESS = SequenceKind("access", "access-log row", "access-log rows", 0)
SEQUENCES = (EVENTS, ACCESS)


def _originator_text(originator: object) -> str:
    """An originator id as the other findings write it, whichever way the store keeps it (16
    bytes, or text); a value that is no UUID (an edited row) as it is."""
    try:
        if isinstance(originator, bytes):
            return str(UUID(bytes=originator))
        return str(UUID(str(originator)))
    except ValueError:
        return repr(originator)


def encode(position: int, content: Sequence[Value]) -> bytes:
    """The canonical encoding of an item: its position (8 bytes, big-endian, signed), then each
    value tagged with its type and, unless fixed-size, prefixed with its length (8 bytes): `B`
    bytes, `S` UTF-8 text, `I` a 64-bit integer, `N` null (`X` any other value, which only an
    edited row holds, by its type and repr). No two items encode alike."""
    parts = [_int64(position)]
    append = parts.append
    for value in content:
        if isinstance(value, bytes):
            append(_tagged(b"B", len(value)))
            append(value)
        elif isinstance(value, str):
            text = value.encode()
            append(_tagged(b"S", len(text)))
            append(text)
        elif value is None:
            append(b"N")
        elif isinstance(value, int):
            append(_tagged(b"I", value))
        else:  # no row of ours holds one (an edited SQLite row's REAL, say): `X` and its repr
            text = f"{type(value).__name__}:{value!r}".encode()
            append(_tagged(b"X", len(text)))
            append(text)
    return b"".join(parts)


def digest(position: int, content: Sequence[Value]) -> bytes:
    return _sha256(encode(position, content)).digest()


def link(previous: bytes, item_digest: bytes) -> bytes:
    """The chain after an item: SHA-256 of the chain before it and the item's digest."""
    return _sha256(previous + item_digest).digest()


def canonical_record(record: Mapping[str, Any]) -> bytes:
    """A row's decoded values as one value of content: canonical JSON (sorted keys, no spaces),
    the same however the row was read back (PostgreSQL's jsonb or SQLite's JSON text)."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_other
    ).encode()


def _other(value: Any) -> dict[str, str]:
    """A value JSON has no form for, which only an edited row holds (SQLite's bytes): by its
    type and repr, so that it differs from every value a row of ours holds."""
    return {f"${type(value).__name__}": repr(value)}


def seal(kind: SequenceKind, previous: bytes, items: Iterable[Item]) -> list[tuple[Any, ...]]:
    """The seal rows of items that follow the chain `previous`, in their order: (position,
    identity..., digest, chain)."""
    rows = []
    width = kind.identity_width
    for item in items:
        position, content = item[0], item[1:]
        item_digest = digest(position, content)
        previous = link(previous, item_digest)
        rows.append((position, *content[:width], item_digest, previous))
    return rows


@dataclass(frozen=True)
class Finding:
    """One thing wrong: `where` names it (a prescription, a delivery, a sealed item, a seal, a
    checkpoint), `what` says what."""

    where: str
    what: str


@dataclass(frozen=True)
class Mark:
    """A sequence as the walk found it up to a position (a checkpoint's): the items and seal rows
    at or before it, and the stored chain of the seal at exactly it (None: there is none)."""

    items: int
    sealed: int
    chain: bytes | None


@dataclass
class SequenceReport:
    kind: SequenceKind
    items: int = 0
    sealed: int = 0  # seal rows
    unsealed: int = 0  # items past the last seal: not yet sealed, not damage
    last_sealed: int = 0  # the last seal's position (0: none)
    marks: dict[int, Mark] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def walk(
    kind: SequenceKind,
    items: Iterable[Item],
    seals: Iterable[SealRow],
    marks: Iterable[int] = (),
) -> SequenceReport:
    """Check a sequence's items against its seal rows, both in position order; `marks`: the
    positions to record a `Mark` at (the checkpoints'). A seal's identity names its item; its
    digest and chain are what is checked (a sealed item whose digest matches is what was
    sealed, whatever the seal's identity columns say)."""
    report = SequenceReport(kind)
    found, describe, width = report.findings.append, kind.describe, kind.identity_width
    ahead = _Marks(marks, report.marks)
    previous, last_sealed, item_count, seal_count, unsealed = GENESIS, None, 0, 0, 0
    items_left, seals_left = iter(items), iter(seals)
    item, sealed = next(items_left, None), next(seals_left, None)
    while item is not None or sealed is not None:
        if item is not None and (sealed is None or item[0] < sealed[0]):  # an item with no seal
            if item[0] > ahead.next:
                ahead.reach(item[0], item_count, seal_count, last_sealed, previous)
            item_count += 1
            if sealed is None:
                unsealed += 1
            else:
                found(Finding(describe(item[0], item[1 : 1 + width]), _INSERTED))
            item = next(items_left, None)
            continue
        assert sealed is not None
        position, item_digest, chain = sealed[0], sealed[-2], sealed[-1]
        if position > ahead.next:
            ahead.reach(position, item_count, seal_count, last_sealed, previous)
        if link(previous, item_digest) != chain:
            found(Finding(f"seal of {kind.noun} {position}", _CHAIN_BROKEN))
        previous, last_sealed = chain, position
        seal_count += 1
        if item is None or item[0] != position:
            found(Finding(describe(position, sealed[1 : 1 + width]), _REMOVED))
        else:
            item_count += 1
            if digest(position, item[1:]) != item_digest:
                found(_damaged(kind, item, sealed))
            item = next(items_left, None)
        sealed = next(seals_left, None)
    ahead.reach(_PAST_ALL, item_count, seal_count, last_sealed, previous)
    report.items, report.sealed, report.unsealed = item_count, seal_count, unsealed
    report.last_sealed = last_sealed or 0
    return report


class _Marks:
    """The marks a walk has yet to reach, the next one first."""

    def __init__(self, positions: Iterable[int], found: dict[int, Mark]) -> None:
        self._pending = sorted(set(positions), reverse=True)
        self._found = found
        self.next = self._pending.pop() if self._pending else _PAST_ALL

    def reach(
        self, position: int, items: int, sealed: int, last_sealed: int | None, chain: bytes
    ) -> None:
        """Record every mark before `position`: the walk has seen all up to each."""
        while self.next < position:
            at = self.next
            self._found[at] = Mark(items, sealed, chain if at == last_sealed else None)
            self.next = self._pending.pop() if self._pending else _PAST_ALL


def _damaged(kind: SequenceKind, item: Item, sealed: SealRow) -> Finding:
    """An item whose digest is not its seal's: another item (by its identity), or changed."""
    width = kind.identity_width
    identity, sealed_identity = item[1 : 1 + width], tuple(sealed[1 : 1 + width])
    where = kind.describe(item[0], identity)
    if identity != sealed_identity:
        return Finding(where, _replaced(kind, sealed_identity))
    return Finding(where, _CHANGED)


_PAST_ALL = 2**63  # after every position
_CHANGED = "changed: its content differs from what was sealed"
_REMOVED = "removed: it was sealed, and it is gone from the store"
_INSERTED = (
    "inserted: it is not sealed, though it stands before the last sealed position (written "
    "behind the service's back, or its seal was removed)"
)
_CHAIN_BROKEN = (
    "the seal chain breaks here: seal rows before it were removed or rewritten, or its own was"
)


def _replaced(kind: SequenceKind, sealed_identity: Sequence[Any]) -> str:
    return (
        f"replaced: {kind.what(sealed_identity)} was sealed at this position (moved, reordered "
        "or replaced)"
    )


@dataclass(frozen=True)
class Head:
    """A sequence's part of a checkpoint: its last sealed position, the number of seal rows up
    to it, and the chain there, in hex (`GENESIS`'s when nothing is sealed)."""

    position: int
    count: int
    digest: str


NOTHING_SEALED = Head(0, 0, GENESIS.hex())


class CheckpointFormatError(ValueError):
    """A document is not a checkpoint; the message says what is wrong with it."""


@dataclass(frozen=True)
class Checkpoint:
    """Each sequence's head at a moment (`at`), with the Ed25519 public key and signature (base64)
    when it was signed. Its document is what `drx audit checkpoint` prints: `{position, events,
    digest}` are the events sequence's, `access` the access log's."""

    at: str
    events: Head
    access: Head
    public_key: str | None = None
    signature: str | None = None

    def head(self, kind: SequenceKind) -> Head:
        return self.events if kind.name == EVENTS.name else self.access

    def document(self) -> dict[str, Any]:
        return {
            "position": self.events.position,
            "events": self.events.count,
            "digest": self.events.digest,
            "at": self.at,
            "public_key": self.public_key,
            "signature": self.signature,
            "access": {
                "position": self.access.position,
                "entries": self.access.count,
                "digest": self.access.digest,
            },
        }

    def message(self) -> bytes:
        """What the signature is over: a version line, then the canonical JSON of everything in
        the document but the signature (the public key included)."""
        unsigned = {key: value for key, value in self.document().items() if key != "signature"}
        return f"{CHECKPOINT_VERSION}\n".encode() + canonical_record(unsigned)

    @classmethod
    def from_document(cls, document: object) -> Checkpoint:
        """A checkpoint from its document (as read from a file or the store), strictly."""
        if not isinstance(document, dict):
            raise CheckpointFormatError("it is not a JSON object")
        access = document.get("access")
        if not isinstance(access, dict):
            raise CheckpointFormatError("`access` is missing or not an object")
        at = document.get("at")
        if not isinstance(at, str):
            raise CheckpointFormatError("`at` is missing or not a string")
        return cls(
            at=at,
            events=_head(document, "events", ""),
            access=_head(access, "entries", "access."),
            public_key=_optional_text(document, "public_key"),
            signature=_optional_text(document, "signature"),
        )


def read_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from its JSON text (as `drx audit checkpoint` prints it)."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise CheckpointFormatError("it is not JSON") from None
    return Checkpoint.from_document(document)


def _head(document: dict[str, Any], count_key: str, prefix: str) -> Head:
    digest_hex = document.get("digest")
    if not isinstance(digest_hex, str) or not re.fullmatch("[0-9a-f]{64}", digest_hex):
        raise CheckpointFormatError(f"`{prefix}digest` is missing or not 64 hex digits")
    return Head(
        _whole(document, "position", prefix), _whole(document, count_key, prefix), digest_hex
    )


def _whole(document: dict[str, Any], key: str, prefix: str) -> int:
    """A whole number a 64-bit column holds (positions and counts are both such)."""
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _PAST_ALL:
        raise CheckpointFormatError(f"`{prefix}{key}` is missing or not a whole number below 2**63")
    return value


def _optional_text(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise CheckpointFormatError(f"`{key}` is neither a string nor null")
    return value


def checkpoint_problems(checkpoint: Checkpoint, reports: Mapping[str, SequenceReport]) -> list[str]:
    """What does not hold of a checkpoint against the walks of its sequences (each walked with
    a mark at the checkpoint's position): its chain and its count. Once both hold, every seal up
    to it is as it was, and the walk itself names each item removed or inserted."""
    problems = []
    for kind in SEQUENCES:
        problem = _head_problem(checkpoint.head(kind), reports[kind.name])
        if problem:
            problems.append(f"{kind.plural}: {problem}")
    return problems


def _head_problem(head: Head, report: SequenceReport) -> str | None:
    plural, position = report.kind.plural, head.position
    if head.count == 0:
        return None if head.digest == GENESIS.hex() else "it seals nothing, yet has a digest"
    mark = report.marks[position]
    if mark.chain is None and report.last_sealed < position:
        return (
            f"truncated: it sealed {head.count:,} {plural} up to position {position}; the seals "
            f"end at position {report.last_sealed}, and the store holds {mark.items:,} up to there"
        )
    if mark.chain is None:
        return f"there is no seal at its position {position}: seal rows were removed"
    if mark.chain.hex() != head.digest:
        return (
            f"the stored seal chain at position {position} differs from its digest: seal rows "
            "up to there were rewritten or removed"
        )
    if mark.sealed != head.count:
        return (
            f"{mark.sealed:,} are sealed up to position {position}, where it sealed {head.count:,}"
        )
    return None
