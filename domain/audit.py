"""`drx audit verify`: walk the whole event store and check that the history is intact and is
what DRx told us.

- Each prescription's facts: numbered without gaps, in order, and each hash chained to the one
  before over the fact's canonical content (`domain.chain`).
- Each body a delivery kept (the first, a correction, a conflicting copy): DRx's signature still
  verifies (`SignatureCheck`; no time tolerance: the question is authenticity, not freshness).
- Each applied delivery has its fact, saying what its body says (`DeliveryReader`: the
  anti-corruption layer reads the body again), and each fact has its delivery.
- Each prescription's last snapshot (what a new fact is recorded on: `domain.prescription`) is
  what its stored facts give at its version: the chain's tail and count, the last fact's place,
  the state. A snapshot is a cache, never the history: one that differs (a change to the fold
  that came without the migration deleting them, an edit) is named with what differs, never the
  values, so that it is deleted before more facts are recorded on it.

The two ports are DRx's protocol, so they come from `interfaces/drx/`; the walk is the domain's.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from domain.application import Prescriptions, recorded_facts
from domain.chain import GENESIS, ChainVerifier, Link
from domain.delivery import Delivery
from domain.fact_data import canonical_json, to_document
from domain.facts import Fact
from domain.prescription import Prescription
from domain.seals import Finding
from domain.state import derive_state

BATCH = 5000
SNAPSHOT_BATCH = 500  # prescriptions whose last snapshot one query finds
HISTORY_EVENTS = 10_000  # events, about, that one query of histories reads (~30 MB)
UNREADABLE_MAX = 1000  # unreadable rows the fact-chain pass names before it stops


@runtime_checkable
class HistoryLookup(Protocol):
    """What the check of the snapshots reads, a query each: the given aggregates' last
    snapshots; their events up to the given versions, by aggregate and version."""

    def select_last_snapshots(self, ids: Sequence[UUID]) -> list[Any]: ...

    def select_histories(self, bounds: Sequence[tuple[UUID, int]]) -> list[Any]: ...


class SignatureCheck(Protocol):
    def __call__(
        self, webhook_id: str, webhook_timestamp: str, signature: str, body: str
    ) -> bool: ...


class DeliveryReader(Protocol):
    def __call__(self, body: str) -> Fact | None:
        """The fact a stored body reports, or None when it cannot be read."""


@dataclass
class AuditReport:
    events: int = 0
    prescriptions: int = 0
    facts: int = 0
    deliveries: int = 0
    snapshots: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


def _digest(fact: Fact) -> bytes:
    return hashlib.sha256(canonical_json(to_document(fact.data)).encode()).digest()[:16]


class _Walk:
    """The state of one pass over the notification log."""

    def __init__(self, signature_ok: SignatureCheck, read_delivery: DeliveryReader) -> None:
        self.signature_ok, self.read_delivery = signature_ok, read_delivery
        self.report = AuditReport()
        self.chains: dict[UUID, tuple[str, ChainVerifier]] = {}
        self.fact_data: dict[str, bytes] = {}
        self.delivered: dict[str, bytes] = {}
        self.applied: set[str] = set()
        self.delivery_event_ids: dict[UUID, str] = {}
        # Prescriptions whose chain has a finding: their snapshots, folded from the facts as
        # they were recorded, differ from altered facts as a matter of course.
        self.broken: set[UUID] = set()

    def found(self, where: str, what: str) -> None:
        self.report.findings.append(Finding(where, what))

    def opened(self, event: Prescription.Opened) -> None:
        self.report.prescriptions += 1
        self.chains[event.originator_id] = (event.subject, ChainVerifier(event.subject))
        if event.originator_version != 1:
            self.found(f"prescription {event.subject}", "its opening event is out of place")

    def fact(self, event: Prescription.FactRecorded) -> None:
        self.report.facts += 1
        fact = event.to_fact()
        if event.originator_id not in self.chains:
            self.found(
                f"prescription {event.originator_id}",
                f"fact {fact.event_id} comes before the prescription was opened",
            )
            self.chains[event.originator_id] = ("?", ChainVerifier("?"))
        subject, verifier = self.chains[event.originator_id]
        link = Link(event.originator_version - 1, event.timestamp, fact, event.hash)
        problem = verifier.check(link)
        if problem:
            self.broken.add(event.originator_id)
            self.found(
                f"prescription {subject}",
                f"fact {link.number} ({fact.event_id}, {fact.drx_type}): {problem}",
            )
        self.fact_data[fact.event_id] = _digest(fact)

    def received(self, event: Delivery.Received) -> None:
        self.report.deliveries += 1
        self.delivery_event_ids[event.originator_id] = event.event_id
        self._body(event.event_id, event, "", applies=True)

    def body_again(self, event: Delivery.Corrected | Delivery.ConflictReceived) -> None:
        """A later body of a stored delivery: a correction (what its fact must now match), or
        a conflicting copy (kept; its signature is checked all the same)."""
        event_id = self.delivery_event_ids.get(event.originator_id, str(event.originator_id))
        corrected = isinstance(event, Delivery.Corrected)
        which = " (its correction)" if corrected else " (a conflicting copy)"
        self._body(event_id, event, which, applies=corrected)

    def _body(self, event_id: str, event: Any, which: str, *, applies: bool) -> None:
        where = f"delivery {event_id}{which}"
        if not self.signature_ok(
            event.webhook_id, event.webhook_timestamp, event.webhook_signature, event.body
        ):
            self.found(
                where,
                "DRx's signature does not verify with any configured secret: the "
                "stored body or headers were altered, or the secret is not configured",
            )
        if not applies:
            return
        fact = self.read_delivery(event.body)
        if fact is not None:
            self.delivered[event_id] = _digest(fact)

    def processed(self, event: Delivery.Processed) -> None:
        if event.fact_recorded:
            self.applied.add(
                self.delivery_event_ids.get(event.originator_id, str(event.originator_id))
            )

    def finish(self) -> AuditReport:
        for event_id in sorted(self.applied):
            if event_id not in self.fact_data:
                self.found(f"delivery {event_id}", "was applied but its fact is missing")
            elif event_id not in self.delivered:
                self.found(f"delivery {event_id}", "was applied but its body cannot be read")
            elif self.delivered[event_id] != self.fact_data[event_id]:
                self.found(f"delivery {event_id}", "its fact's data differs from what DRx sent")
        for event_id in sorted(self.fact_data.keys() - self.delivery_ids()):
            self.found(f"fact {event_id}", "has no stored delivery")
        return self.report

    def delivery_ids(self) -> set[str]:
        return set(self.delivery_event_ids.values())


class Auditor:
    def __init__(
        self, app: Prescriptions, signature_ok: SignatureCheck, read_delivery: DeliveryReader
    ) -> None:
        self.app, self.signature_ok, self.read_delivery = app, signature_ok, read_delivery

    def _notifications(self, found: Callable[[str, str], None]) -> Iterator[Any]:
        """Every stored event from position 1 (rows at 0 or below are the seals' to name), in
        order. A row the recorder cannot read at all (its id or state edited into something
        that is no UUID or no bytes) is named, and the walk goes on after it; past
        UNREADABLE_MAX such rows it stops (the seals' pass names every one)."""
        start, unreadable, limit = 1, 0, BATCH
        while True:
            try:
                batch = self.app.recorder.select_notifications(start=start, limit=limit)
            except Exception as error:
                readable, bad = self._around_unreadable(start, error)
                yield from readable
                found(f"stored event at position {bad}", f"cannot be read ({type(error).__name__})")
                unreadable += 1
                if unreadable == UNREADABLE_MAX:
                    found(
                        f"stored events after position {bad}",
                        f"not walked: {UNREADABLE_MAX} rows could not be read before them",
                    )
                    return
                # Pages grow again from one row: bad rows often come in runs (a script's edit).
                start, limit = bad + 1, 1
                continue
            if not batch:
                return
            yield from batch
            start, limit = batch[-1].id + 1, min(2 * limit, BATCH)

    def _around_unreadable(self, start: int, error: Exception) -> tuple[Sequence[Any], int]:
        """After a page from `start` failed: the rows from `start` that read, and the position
        of the first one that does not; `error` again when no row fails alone (a passing fault
        of the database, not a row: a wrong verdict would be worse than none)."""
        recorder = self.app.recorder
        readable: Sequence[Any] = []
        read, failing, limit = 0, 0, 1
        while not failing:  # gallop on how many rows read: a cost that grows with the distance
            try:
                rows = recorder.select_notifications(start=start, limit=limit)
            except Exception:
                failing = limit
                continue
            if len(rows) < limit or limit == BATCH:
                raise error  # every row from start reads now
            readable, read, limit = rows, limit, min(2 * limit, BATCH)
        while failing - read > 1:  # then bisect
            middle = (read + failing) // 2
            try:
                readable, read = recorder.select_notifications(start=start, limit=middle), middle
            except Exception:
                failing = middle
        # The first row after those cannot be read: its position, by bisection on where a page
        # of at most one row stops.
        after = readable[-1].id + 1 if readable else start
        low, high = after, max(after, recorder.max_notification_id() or 0)
        while low < high:
            middle = (low + high) // 2
            try:
                recorder.select_notifications(start=after, limit=1, stop=middle)
            except Exception:
                high = middle
            else:
                low = middle + 1
        try:
            recorder.select_notifications(start=low, limit=1, stop=low)
        except Exception:
            return readable, low
        raise error

    def verify(
        self,
        progress: Callable[[int, int], None] | None = None,
        snapshots_progress: Callable[[], Callable[[int, int], None]] | None = None,
    ) -> AuditReport:
        """The walk, then the snapshots' pass; `progress` is told (position, head) during the
        walk, and what `snapshots_progress` makes when the pass starts (prescriptions checked,
        of all)."""
        walk = _Walk(self.signature_ok, self.read_delivery)
        head = self.app.recorder.max_notification_id() or 0
        for notification in self._notifications(walk.found):
            walk.report.events += 1
            if progress and walk.report.events % BATCH == 0:
                progress(notification.id, head)
            try:
                event = self.app.mapper.to_domain_event(notification)
            except Exception as exc:  # a stored event altered so far that it no longer decodes
                walk.found(
                    f"stored event {notification.originator_id} v{notification.originator_version}",
                    f"cannot be read any more ({type(exc).__name__})",
                )
                with contextlib.suppress(ValueError):  # its aggregate's snapshot is not to blame
                    walk.broken.add(_uuid(notification.originator_id))
                continue
            if isinstance(event, Prescription.Opened):
                walk.opened(event)
            elif isinstance(event, Prescription.FactRecorded):
                walk.fact(event)
            elif isinstance(event, Delivery.Received):
                walk.received(event)
            elif isinstance(event, Delivery.Processed):
                walk.processed(event)
            elif isinstance(event, Delivery.Corrected | Delivery.ConflictReceived):
                walk.body_again(event)
        if progress:
            progress(head, head)
        self._snapshots(walk, snapshots_progress() if snapshots_progress else None)
        return walk.finish()

    def _snapshots(self, walk: _Walk, progress: Callable[[int, int], None] | None) -> None:
        """Each walked prescription's last snapshot against its stored facts: the snapshots of
        SNAPSHOT_BATCH prescriptions a query, then their histories up to each snapshot's
        version, about HISTORY_EVENTS events a query (`HistoryLookup`)."""
        recorder = self.app.recorder
        if not isinstance(recorder, HistoryLookup):
            return  # a store of the library's own (tests in memory)
        # Not those the walk found broken, nor "?" (facts without their opening event).
        subjects = {
            a: subject
            for a, (subject, _) in walk.chains.items()
            if subject != "?" and a not in walk.broken
        }
        ids = list(subjects)
        for start in range(0, len(ids), SNAPSHOT_BATCH):
            found = recorder.select_last_snapshots(ids[start : start + SNAPSHOT_BATCH])
            for part in _by_events(found):
                bounds = [(_uuid(s.originator_id), s.originator_version) for s in part]
                histories: dict[UUID, list[Any]] = {aggregate_id: [] for aggregate_id, _ in bounds}
                for stored in recorder.select_histories(bounds):
                    histories[_uuid(stored.originator_id)].append(stored)
                for (aggregate_id, _), snapshot in zip(bounds, part, strict=True):
                    walk.report.snapshots += 1
                    self._snapshot(walk, subjects[aggregate_id], snapshot, histories[aggregate_id])
            if progress:
                progress(min(start + SNAPSHOT_BATCH, len(ids)), len(ids))
        if progress and not ids:
            progress(0, 0)

    def _snapshot(self, walk: _Walk, subject: str, stored: Any, history: list[Any]) -> None:
        where = f"prescription {subject}"
        try:
            snapshot: Any = self.app.mapper.to_domain_event(stored)
            state = snapshot.state
            version = snapshot.originator_version
            named, counted, last_hash, last, fold = (
                state["subject"],
                state["fact_count"],
                state["last_hash"],
                state["last"],
                state["fold"],
            )
        except Exception as exc:  # altered so far that it no longer decodes
            walk.found(
                where, f"its last snapshot cannot be read ({type(exc).__name__}): {_DELETE_IT}"
            )
            return
        stored_to = history[-1].originator_version if history else 0
        if stored_to < version:  # no gap (the walk saw none): the history's end is gone
            walk.found(
                where,
                f"its history ends at version {stored_to}, but its last snapshot was taken at "
                f"version {version} on {counted} facts: events were removed from its end. Keep "
                "the snapshot (it is what shows it) and restore the history from a backup",
            )
            return
        try:
            recorded = (
                recorded_facts(
                    stored.originator_id, [self.app.mapper.to_domain_event(e) for e in history]
                )
                or []
            )
        except Exception:
            return  # an event that does not decode, or a gap: the walk has named it
        facts = [r.fact for r in recorded]
        try:
            derived = canonical_json(derive_state(subject, facts).as_dict())
        except Exception as exc:
            walk.found(
                where,
                f"its facts up to version {version} cannot be folded ({type(exc).__name__}): "
                "the service cannot derive its state",
            )
            return
        expected = {
            "subject": (named, subject),
            "fact count": (counted, len(facts)),
            "chain's tail": (last_hash, recorded[-1].hash if recorded else GENESIS),
            "last fact's place": (
                tuple(last) if isinstance(last, list) else last,  # JSON keeps no tuples
                max(f.order_key() for f in facts) if facts else None,
            ),
            "state": (fold, derived),
        }
        differs = [name for name, (kept, given) in expected.items() if kept != given]
        if differs:
            walk.found(
                where,
                f"its snapshot at version {version} differs from its stored facts "
                f"({', '.join(differs)}): {_DELETE_IT}",
            )


def _by_events(snapshots: list[Any]) -> Iterator[list[Any]]:
    """The snapshots in runs whose histories hold about HISTORY_EVENTS events in all (a
    snapshot's version is its history's length), so that memory does not grow with them."""
    part: list[Any] = []
    events = 0
    for snapshot in snapshots:
        if part and events + snapshot.originator_version > HISTORY_EVENTS:
            yield part
            part, events = [], 0
        part.append(snapshot)
        events += snapshot.originator_version
    if part:
        yield part


def _uuid(originator_id: UUID | str) -> UUID:
    return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)


# What a finding about a snapshot asks for (docs/operations.md, "Snapshots").
_DELETE_IT = (
    "a snapshot is a cache: delete the snapshots (docs/operations.md, Snapshots), and loads "
    "fold the stored facts again"
)
