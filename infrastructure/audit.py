"""`drx audit verify`: walk the whole event store and check that the history is intact and is
what DRx told us.

- Each prescription's facts: numbered without gaps, in order, and each hash chained to the one
  before over the fact's canonical content (domain/chain.py).
- Each raw delivery: DRx's signature still verifies against the configured secrets (no time
  tolerance: the question is authenticity, not freshness).
- Each applied delivery has its fact, with the data DRx sent; each fact has its delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from standardwebhooks.webhooks import Webhook

from domain.chain import ChainVerifier, Link, canonical_json
from domain.delivery import Delivery
from domain.errors import DeliveryNotFoundError
from domain.prescription import Prescription, RecordedFact
from domain.service import Prescriptions
from domain.state import format_instant

BATCH = 5000


@dataclass(frozen=True)
class Finding:
    """One thing wrong: `where` names the prescription or delivery, `what` says what."""

    where: str
    what: str


@dataclass
class AuditReport:
    events: int = 0
    prescriptions: int = 0
    facts: int = 0
    deliveries: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


def signature_verifies(
    secrets: Sequence[str], webhook_id: str, webhook_timestamp: str, signature: str, body: str
) -> bool:
    """Recompute DRx's Standard Webhooks signature over the stored bytes, with any secret."""
    try:
        moment = datetime.fromtimestamp(int(webhook_timestamp), tz=UTC)
    except (ValueError, OverflowError):
        return False
    given = {part[3:] for part in signature.split() if part.startswith("v1,")}
    for secret in secrets:
        expected = Webhook(secret).sign(webhook_id, moment, body).split(",", 1)[1]
        if any(hmac.compare_digest(expected, candidate) for candidate in given):
            return True
    return False


def _digest(data: Any) -> bytes:
    return hashlib.sha256(canonical_json(data).encode()).digest()[:16]


class _Walk:
    """The state of one pass over the notification log."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = secrets
        self.report = AuditReport()
        self.chains: dict[UUID, tuple[str, ChainVerifier]] = {}
        self.fact_data: dict[str, bytes] = {}
        self.delivered: dict[str, bytes] = {}
        self.applied: set[str] = set()
        self.delivery_event_ids: dict[UUID, str] = {}

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
            self.found(
                f"prescription {subject}",
                f"fact {link.number} ({fact.event_id}, {fact.drx_type}): {problem}",
            )
        self.fact_data[fact.event_id] = _digest(dict(fact.data))

    def received(self, event: Delivery.Received) -> None:
        self.report.deliveries += 1
        self.delivery_event_ids[event.originator_id] = event.event_id
        self._body(event.event_id, event, "", applies=True)

    def body_again(self, event: Delivery.Corrected | Delivery.ConflictReceived) -> None:
        """A later body of a stored delivery: a correction (what its fact must now match), or
        a conflicting copy (kept; its signature is checked all the same)."""
        event_id = self.delivery_event_ids.get(event.originator_id, str(event.originator_id))
        corrected = isinstance(event, Delivery.Corrected)
        self._body(
            event_id,
            event,
            " (its correction)" if corrected else " (a conflicting copy)",
            applies=corrected,
        )

    def _body(self, event_id: str, event: Any, which: str, *, applies: bool) -> None:
        where = f"delivery {event_id}{which}"
        if not signature_verifies(
            self.secrets,
            event.webhook_id,
            event.webhook_timestamp,
            event.webhook_signature,
            event.body,
        ):
            self.found(
                where,
                "DRx's signature does not verify with any configured secret: the "
                "stored body or headers were altered, or the secret is not configured",
            )
        try:
            data = _digest(json.loads(event.body).get("data"))
        except (ValueError, AttributeError):
            self.found(where, "the stored body is not a JSON object any more")
            return
        if applies:
            self.delivered[event_id] = data

    def processed(self, event: Delivery.Processed) -> None:
        if event.fact_recorded:
            self.applied.add(
                self.delivery_event_ids.get(event.originator_id, str(event.originator_id))
            )

    def finish(self) -> AuditReport:
        for event_id in sorted(self.applied):
            if event_id not in self.fact_data:
                self.found(f"delivery {event_id}", "was applied but its fact is missing")
            elif self.delivered.get(event_id, self.fact_data[event_id]) != self.fact_data[event_id]:
                self.found(f"delivery {event_id}", "its fact's data differs from what DRx sent")
        for event_id in sorted(self.fact_data.keys() - self.delivered.keys()):
            self.found(f"fact {event_id}", "has no stored delivery")
        return self.report


class Auditor:
    def __init__(self, app: Prescriptions, secrets: Sequence[str]) -> None:
        self.app, self.secrets = app, secrets

    def _notifications(self) -> Iterator[Any]:
        start = 1
        while True:
            batch = self.app.recorder.select_notifications(start=start, limit=BATCH)
            if not batch:
                return
            yield from batch
            start = batch[-1].id + 1

    def verify(self, progress: Callable[[int, int], None] | None = None) -> AuditReport:
        walk = _Walk(self.secrets)
        head = self.app.recorder.max_notification_id() or 0
        for notification in self._notifications():
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
        return walk.finish()


def history_document(subject: str, recorded: Sequence[RecordedFact]) -> dict[str, Any]:
    """A prescription's facts in recorded order, each with its hash and the chain's verdict."""
    verifier = ChainVerifier(subject)
    events = []
    for r in recorded:
        problem = verifier.check(Link(r.number, r.recorded_at, r.fact, r.hash))
        events.append(
            {
                "version": r.number,
                "type": r.fact.drx_type,
                "event_id": r.fact.event_id,
                "occurred_at": format_instant(r.fact.occurred_at),
                "recorded_at": format_instant(r.recorded_at),
                "sequence": r.fact.sequence or None,
                "correlation": dict(r.fact.correlation),
                "data": dict(r.fact.data),
                "hash": r.hash,
                "chain_ok": problem is None,
                "chain_problem": problem,
            }
        )
    return {
        "prescription_id": subject,
        "chain_intact": all(e["chain_ok"] for e in events),
        "events": events,
    }


def export_prescription(
    app: Prescriptions, secrets: Sequence[str], subject: str, delivery_ids: Iterable[str]
) -> dict[str, Any]:
    """One prescription for an auditor: its state, its history with the chain's verdict, every
    stored delivery about it (raw, with the signature's verdict), and the overall result."""
    history = history_document(subject, app.history(subject))
    event_ids = sorted({e["event_id"] for e in history["events"]} | set(delivery_ids))
    deliveries = []
    for event_id in event_ids:
        try:
            delivery = app.delivery(event_id)
        except DeliveryNotFoundError:
            deliveries.append({"event_id": event_id, "stored": False})
            continue
        deliveries.append(
            {
                "event_id": event_id,
                "stored": True,
                "type": delivery.drx_type,
                "received_at": format_instant(delivery.received_at),
                "status": delivery.shown_status,
                "reason": delivery.reason,
                "raw_body": delivery.body,
                "conflicting_copies": [
                    {"received_at": format_instant(copy.received_at), "raw_body": copy.body}
                    for copy in delivery.conflicts
                ],
                "webhook_id": delivery.webhook_id,
                "webhook_timestamp": delivery.webhook_timestamp,
                "webhook_signature": delivery.webhook_signature,
                "signature_verified": signature_verifies(
                    secrets,
                    delivery.webhook_id,
                    delivery.webhook_timestamp,
                    delivery.webhook_signature,
                    delivery.body,
                ),
            }
        )
    return {
        "prescription_id": subject,
        "exported_at": format_instant(datetime.now(UTC)),
        "state": app.state(subject).as_dict(),
        "history": history,
        "deliveries": deliveries,
        "verification": {
            "chain_intact": history["chain_intact"],
            "every_fact_has_its_delivery": all(d["stored"] for d in deliveries),
            "every_signature_verified": all(d.get("signature_verified") for d in deliveries),
        },
    }
