"""The audit seals as stored: the sealer, which seals every new stored event and access-log row
and writes checkpoints, and the verifier, which checks the whole store against its seals and
checkpoints (the pure parts, the chain, the walk and the checkpoint's message, are
`domain/seals.py`'s).

The sealer takes each sequence's new items in position order, in batches of `SEAL_BATCH`, each
batch in one transaction that excludes any other sealer (PostgreSQL: an advisory lock for the
transaction; SQLite: its BEGIN IMMEDIATE). It runs in the projector's process, where the
projections' leader runs it every `SEAL_INTERVAL_S`, and writes a checkpoint once
`CHECKPOINT_EVERY_ITEMS` items were sealed since the last one, or `CHECKPOINT_INTERVAL_S` has
passed and something was sealed; `drx audit checkpoint` seals and writes one at once. It relies
on positions becoming visible in order (on PostgreSQL each table's writers wait for each other
on an advisory lock, held until they commit; SQLite has one writer), so an item is never seen
behind one already sealed.

A checkpoint is signed with Ed25519 when DRX_AUDIT_SIGNING_KEY (base64 of a 32-byte seed) is
set: over `Checkpoint.message()`, the public key being base64 of its raw 32 bytes.

The verifier reads one snapshot of the store (PostgreSQL: a repeatable-read, read-only
transaction on a connection of its own, in binary; SQLite: one read transaction), each table in
keyset-paginated batches of `READ_BATCH` rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import psycopg

from domain.clock import Clock
from domain.instants import format_instant
from domain.seals import (
    ACCESS,
    EVENTS,
    GENESIS,
    Checkpoint,
    CheckpointFormatError,
    Finding,
    Head,
    Item,
    SequenceKind,
    SequenceReport,
    canonical_record,
    checkpoint_problems,
    read_checkpoint,
    seal,
    walk,
)
from infrastructure.access_log import COLUMNS as ACCESS_COLUMNS
from infrastructure.database import (
    Cursor,
    ReadDatabase,
    Row,
    connect_postgres,
    connect_sqlite,
    insert_rows,
)
from infrastructure.settings import Settings

log = logging.getLogger(__name__)

SEAL_INTERVAL_S = 1.0  # how often the projector's process seals what is new
CHECKPOINT_EVERY_ITEMS = 10_000  # a checkpoint once this many items were sealed since the last
CHECKPOINT_INTERVAL_S = 300.0  # or once this long has passed, if anything was sealed since
SEAL_BATCH = 5_000  # items per sealing transaction
READ_BATCH = 20_000  # rows per page when verifying

SEALS_TABLE = "drx_audit_seals"
CHECKPOINTS_TABLE = "drx_audit_checkpoints"
# Pages are read from a position on, inclusive: from the least 64-bit integer, then from one
# past the last row read (a row at -2**63 itself, written behind the service's back, is read too).
_FIRST = -(2**63)
_LAST = 2**63 - 1

Query = Callable[[str, Sequence[Any]], list[Row]]


@dataclass(frozen=True)
class _Source:
    """Where one sequence's items and seal rows are read from, on one dialect."""

    kind: SequenceKind
    items_sql: str  # params: from (inclusive), limit
    seals_sql: str  # params: from (inclusive), limit
    head_sql: str  # the last position stored
    read_item: Callable[[Row], Item] | None  # None: the row is the item as it is
    # An item's identity as the seal table's originator columns take it.
    identity_columns: Callable[[Sequence[Any]], tuple[Any, Any]]


def _sources(dialect: str) -> tuple[_Source, _Source]:
    postgres = dialect == "postgresql"
    # PostgreSQL's uuid as its 16 bytes: the same value whether read as text or binary.
    originator = "uuid_send(originator_id)" if postgres else "originator_id"
    table, position = ("drx_events", "notification_id") if postgres else ("stored_events", "rowid")
    as_text = "::text" if postgres else ""  # the id lists as their JSON text, on both
    access_columns = ", ".join(
        f"{column}{as_text}" if column.endswith("_ids") else column for column in ACCESS_COLUMNS
    )
    return (
        _Source(
            EVENTS,
            f"SELECT {position}, {originator}, originator_version, topic, state FROM {table}"
            f" WHERE {position} >= %s ORDER BY {position} LIMIT %s",
            f"SELECT position, {originator}, originator_version, digest, chain FROM {SEALS_TABLE}"
            f" WHERE sequence = '{EVENTS.name}' AND position >= %s ORDER BY position LIMIT %s",
            f"SELECT max({position}) FROM {table}",
            None,
            _uuid_columns if postgres else _as_stored,
        ),
        _Source(
            ACCESS,
            f"SELECT id, {access_columns} FROM drx_access_log WHERE id >= %s ORDER BY id LIMIT %s",
            f"SELECT position, digest, chain FROM {SEALS_TABLE}"
            f" WHERE sequence = '{ACCESS.name}' AND position >= %s ORDER BY position LIMIT %s",
            "SELECT max(id) FROM drx_access_log",
            _access_item,
            lambda _: (None, None),
        ),
    )


def _as_stored(identity: Sequence[Any]) -> tuple[Any, Any]:
    return identity[0], identity[1]


def _uuid_columns(identity: Sequence[Any]) -> tuple[str, int]:
    return str(UUID(bytes=identity[0])), identity[1]


def _access_item(row: Row) -> Item:
    """An access-log row's content: its values, the id lists decoded, as canonical JSON."""
    values = (*row[1:6], _decoded(row[6]), _decoded(row[7]))
    return (row[0], canonical_record(dict(zip(ACCESS_COLUMNS, values, strict=True))))


def _decoded(text: Any) -> Any:
    """A JSON text's value; a value that is no JSON text (an edited SQLite row) stays as it is."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return text


class CheckpointSigner:
    """Signs checkpoints with the Ed25519 key whose seed DRX_AUDIT_SIGNING_KEY holds."""

    def __init__(self, seed_base64: str) -> None:
        # Imported when a key is configured: its library is 6 MB of every process that loads it.
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

        self._key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_base64))
        self.public_key = base64.b64encode(self._key.public_key().public_bytes_raw()).decode()

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        keyed = replace(checkpoint, public_key=self.public_key, signature=None)
        signature = self._key.sign(keyed.message())
        return replace(keyed, signature=base64.b64encode(signature).decode())


def signer_for(settings: Settings) -> CheckpointSigner | None:
    return CheckpointSigner(settings.audit_signing_key) if settings.audit_signing_key else None


def signature_problem(checkpoint: Checkpoint, expected_key: str | None) -> str | None:
    """What is wrong with a checkpoint's signature: it does not verify with its own public key,
    or (`expected_key`: it must be signed with ours) it is unsigned or that key is not ours.
    None for an unsigned one when no key is expected."""
    if checkpoint.signature is None:
        if expected_key is not None:
            return "it is unsigned, though DRX_AUDIT_SIGNING_KEY is set: it must be signed with it"
        return None
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - see CheckpointSigner
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    try:
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(checkpoint.public_key or "", validate=True)
        )
        key.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.message())
    except (InvalidSignature, ValueError):  # binascii.Error is a ValueError
        return (
            "its signature does not verify with its public key: it was altered after it was signed"
        )
    if expected_key is not None and checkpoint.public_key != expected_key:
        return "it is signed with a key other than DRX_AUDIT_SIGNING_KEY's"
    return None


def _lock_key(settings: Settings) -> int:
    digest = hashlib.sha256(f"drx-seals:{settings.postgres_schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Sealer:
    """Seals new items and writes checkpoints (see the module's docstring)."""

    def __init__(
        self,
        db: ReadDatabase,
        settings: Settings,
        clock: Clock,
        *,
        batch: int = SEAL_BATCH,
        seal_interval_s: float = SEAL_INTERVAL_S,
        checkpoint_every: int = CHECKPOINT_EVERY_ITEMS,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.db, self.clock, self.signer = db, clock, signer_for(settings)
        self.batch = batch
        self.seal_interval_s, self.checkpoint_interval_s = seal_interval_s, checkpoint_interval_s
        self.checkpoint_every = checkpoint_every
        self._sources = _sources(db.dialect)
        self._lock_key = _lock_key(settings)
        self._next_seal = 0.0
        self._next_checkpoint = time.monotonic() + checkpoint_interval_s
        self._since_checkpoint = 0

    def tick(self) -> None:
        """What the projector's loop calls between its batches: seal a batch of each sequence
        (once per `seal_interval_s`, or at once again while a backlog lasts, so that sealing a
        large store for the first time takes turns with the projections), and write a
        checkpoint when one is due."""
        now = time.monotonic()
        if now < self._next_seal:
            return
        self._next_seal = now + self.seal_interval_s  # a failure too is tried again then
        sealed = self.seal(batches=1)
        if sealed >= self.batch:  # behind: the next turn seals on
            self._next_seal = now
        self._since_checkpoint += sealed
        if self._since_checkpoint and (
            self._since_checkpoint >= self.checkpoint_every or now >= self._next_checkpoint
        ):
            self._store_checkpoint()

    def seal(self, *, batches: int | None = None) -> int:
        """Seal the items stored after each sequence's last seal (at most `batches` batches of
        each; all by default); the number sealed."""
        sealed = 0
        for source in self._sources:
            done, left = self.batch, batches
            while done == self.batch and left != 0:
                with self.db.transaction() as cursor:
                    done = self._seal_batch(cursor, source)
                sealed += done
                left = None if left is None else left - 1
        return sealed

    def checkpoint(self) -> Checkpoint:
        """Seal everything new, then store (and return) a checkpoint of the sealed heads."""
        self.seal()
        return self._store_checkpoint()

    def _store_checkpoint(self) -> Checkpoint:
        with self.db.transaction() as cursor:
            self._lock(cursor)
            checkpoint = Checkpoint(
                at=format_instant(self.clock.now()),
                events=self._head(cursor, EVENTS),
                access=self._head(cursor, ACCESS),
            )
            if self.signer is not None:
                checkpoint = self.signer.sign(checkpoint)
            cursor.execute(
                f"INSERT INTO {CHECKPOINTS_TABLE} (document) VALUES (%s)",
                (json.dumps(checkpoint.document()),),
            )
        self._since_checkpoint = 0
        self._next_checkpoint = time.monotonic() + self.checkpoint_interval_s
        log.info(
            "audit checkpoint: events sealed up to position %d (%d), the access log up to %d (%d)",
            checkpoint.events.position,
            checkpoint.events.count,
            checkpoint.access.position,
            checkpoint.access.count,
        )
        return checkpoint

    def _lock(self, cursor: Cursor) -> None:
        """One sealer at a time (SQLite's BEGIN IMMEDIATE already holds the database)."""
        if self.db.dialect == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))

    def _last_seal(self, cursor: Cursor, kind: SequenceKind) -> tuple[int, bytes, int] | None:
        """The last seal's position, chain and ordinal (the sequence's sealed count)."""
        cursor.execute(
            f"SELECT position, chain, ordinal FROM {SEALS_TABLE} WHERE sequence = %s"
            " ORDER BY position DESC LIMIT 1",
            (kind.name,),
        )
        row = cursor.fetchone()
        return (int(row[0]), bytes(row[1]), int(row[2])) if row else None

    def _seal_batch(self, cursor: Cursor, source: _Source) -> int:
        self._lock(cursor)
        last = self._last_seal(cursor, source.kind)
        if last is not None and last[0] == _LAST:
            return 0  # nothing can stand after it
        first, previous, sealed = (last[0] + 1, *last[1:]) if last else (_FIRST, GENESIS, 0)
        cursor.execute(source.items_sql, (first, self.batch))
        rows = cursor.fetchall()
        items = rows if source.read_item is None else [source.read_item(row) for row in rows]
        insert_rows(
            cursor,
            self.db.dialect,
            f"INSERT INTO {SEALS_TABLE}"
            " (sequence, position, originator_id, originator_version, digest, chain, ordinal)",
            ("text", "bigint", "uuid", "bigint", "bytea", "bytea", "bigint"),
            [
                (
                    source.kind.name,
                    row[0],
                    *source.identity_columns(row[1:-2]),
                    *row[-2:],
                    sealed + number,
                )
                for number, row in enumerate(seal(source.kind, previous, items), start=1)
            ],
        )
        return len(rows)

    def _head(self, cursor: Cursor, kind: SequenceKind) -> Head:
        """Where a sequence's seals stand: read from its last seal, not counted (a count grows
        with the store; a checkpoint is written every few thousand items)."""
        last = self._last_seal(cursor, kind)
        if last is None:
            return Head(0, 0, GENESIS.hex())
        position, chain, count = last
        return Head(position, count, chain.hex())


@dataclass
class SealReport:
    """The seal pass of `drx audit verify`: each sequence's walk, every finding (the walks' and
    the checkpoints'), and which checkpoints were checked."""

    sequences: dict[str, SequenceReport]
    findings: list[Finding]
    checkpoints: int
    unsigned: list[str]  # the checkpoints checked that carry no signature


class SealVerifier:
    """Checks the store against its seals, its stored checkpoints and any given ones."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        signer = signer_for(settings)
        self.public_key = signer.public_key if signer else None

    def verify(
        self,
        files: Sequence[tuple[str, Checkpoint]] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> SealReport:
        """`files`: checkpoints kept outside the database, by name; each must also be signed
        with our key when DRX_AUDIT_SIGNING_KEY is set. `progress(position, head)` follows the
        events."""
        findings: list[Finding] = []
        with _snapshot(self.settings) as query:
            stored = self._stored_checkpoints(query, findings)
            given = [(f"checkpoint file {name}", checkpoint, True) for name, checkpoint in files]
            checkpoints = [*stored, *given]
            reports = {}
            for source in _sources(self.settings.dialect):
                marks = [checkpoint.head(source.kind).position for _, checkpoint, _ in checkpoints]
                reached = _progress(query, source, progress) if source.kind is EVENTS else None
                reports[source.kind.name] = walk(
                    source.kind,
                    _pages(query, source.items_sql, source.read_item, reached),
                    _pages(query, source.seals_sql),
                    marks,
                )
        for report in reports.values():
            findings += report.findings
        for where, checkpoint, ours in checkpoints:
            findings += [Finding(where, p) for p in checkpoint_problems(checkpoint, reports)]
            problem = signature_problem(checkpoint, self.public_key if ours else None)
            if problem:
                findings.append(Finding(where, problem))
        unsigned = [where for where, checkpoint, _ in checkpoints if checkpoint.signature is None]
        return SealReport(reports, findings, len(checkpoints), unsigned)

    def _stored_checkpoints(
        self, query: Query, findings: list[Finding]
    ) -> list[tuple[str, Checkpoint, bool]]:
        stored = []
        rows = query(f"SELECT id, document FROM {CHECKPOINTS_TABLE} ORDER BY id", ())
        for checkpoint_id, document in rows:
            where = f"stored checkpoint {checkpoint_id}"
            try:
                checkpoint = read_checkpoint(document)
            except CheckpointFormatError as error:
                findings.append(Finding(where, f"cannot be read: {error}"))
                continue
            stored.append((f"{where} ({checkpoint.at})", checkpoint, False))
        return stored


def _progress(
    query: Query, source: _Source, progress: Callable[[int, int], None] | None
) -> Callable[[int], None] | None:
    """`progress(position, head)` as the walk reaches each page, head the last position now."""
    if progress is None:
        return None
    head = int(query(source.head_sql, ())[0][0] or 0)
    return lambda position: progress(min(position, head), head)


def _pages(
    query: Query,
    sql: str,
    read_item: Callable[[Row], Item] | None = None,
    reached: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Every row `sql` selects, by keyset pagination on its first column; `reached(position)`
    after each page."""
    first = _FIRST
    while True:
        rows = query(sql, (first, READ_BATCH))
        yield from rows if read_item is None else map(read_item, rows)
        if not rows:
            return
        last = rows[-1][0]
        if reached is not None:
            reached(last)
        if len(rows) < READ_BATCH or last == _LAST:
            return
        first = last + 1


def _text_or_bytes(value: bytes) -> str | bytes:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


@contextmanager
def _snapshot(settings: Settings) -> Iterator[Query]:
    """Queries that all see one snapshot of the store."""
    if settings.dialect == "postgresql":
        with connect_postgres(settings) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                yield lambda sql, params: conn.execute(
                    sql, params, binary=True, prepare=True
                ).fetchall()
        return
    with connect_sqlite(settings) as sqlite:
        # Text that is no UTF-8 (an edited row's: SQLite keeps any bytes) comes back as bytes,
        # which seal apart from any text: the row is named, instead of the pass failing.
        sqlite.text_factory = _text_or_bytes
        sqlite.execute("BEGIN")
        try:
            yield lambda sql, params: sqlite.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            sqlite.execute("ROLLBACK")
