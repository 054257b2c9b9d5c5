"""The documents the HTTP API and the command line give of a prescription: its history with the
chain's verdict on each fact, and the audit export (state, history, every raw delivery with its
signature's verdict)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from domain.application import Prescriptions
from domain.chain import ChainVerifier, Link
from domain.errors import DeliveryNotFoundError
from domain.instants import format_instant
from domain.prescription import RecordedFact
from interfaces.drx.signature import SignatureVerifier


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
                "data": dict(r.fact.document),
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
    app: Prescriptions, verifier: SignatureVerifier, subject: str, delivery_ids: Iterable[str]
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
                "signature_verified": verifier.matches(
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
