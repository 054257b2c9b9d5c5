"""Test helpers: the contract's example payloads, and DRx-style signing with the standardwebhooks
library itself (never with the code under test)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

FIXTURES = Path(__file__).parent / "fixtures"
API_KEY = "drx_test_key_0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = sorted((FIXTURES / "examples").glob("*.json"))
LIFECYCLES = sorted((FIXTURES / "lifecycles").glob("*.json"))


def load_example(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "examples" / f"{name}.json").read_text())


def load_lifecycle(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def relabelled(lifecycle: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    """A lifecycle's events for another prescription: the subject and every id get `tag`."""
    subject = f"{lifecycle['subject']}_{tag}"
    return [
        {
            **event,
            "id": f"{event['id']}_{tag}",
            "subject": subject,
            "correlation": {**event.get("correlation", {}), "prescription_id": subject},
        }
        for event in lifecycle["events"]
    ]


def command_for(payload: dict[str, Any]) -> Any:
    """The command the webhook would make of this payload (a RecordDelivery or ParkDelivery)."""
    from interfaces.drx.signature import SignedHeaders
    from interfaces.drx.translator import parse_envelope, translate

    body = json.dumps(payload).encode()
    return translate(parse_envelope(body), body, SignedHeaders("msg_1", "1700000000", "v1,abc"))


def intake_for(app: Any) -> Any:
    """The unit of work over an application, as the bootstrap wires it."""
    from domain.unit_of_work import Intake
    from interfaces.drx.translator import report_digest

    return Intake(app, report_digest)


def deliver(app: Any, payload: dict[str, Any]) -> Any:
    """Take one payload into the store as the webhook would (one transaction); its outcome."""
    return intake_for(app).take(command_for(payload)).outcome


def is_stored(app: Any, event_id: str) -> bool:
    """Whether a delivery with this envelope id is in the store."""
    from domain.ids import delivery_id

    return bool(app.recorder.select_events(delivery_id(event_id), limit=1))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def signed_headers(
    body: bytes,
    *secrets: str,
    skew: timedelta = timedelta(0),
    message_id: str = "msg_test",
) -> dict[str, str]:
    """Headers as DRx sends them; several secrets give several signatures (rotation)."""
    moment = datetime.now(UTC) + skew
    signatures = " ".join(
        Webhook(secret).sign(message_id, moment, body.decode()) for secret in secrets
    )
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signatures,
    }


def post_signed(client: Any, payload: dict[str, Any] | bytes, *secrets: str, **kwargs: Any) -> Any:
    """POST a payload to the webhook as DRx would, by default with the app's own secrets."""
    body = payload if isinstance(payload, bytes) else body_of(payload)
    secrets = secrets or client.app.state.parts.settings.webhook_secrets
    return client.post(
        "/webhooks/drx", content=body, headers=signed_headers(body, *secrets, **kwargs)
    )


@contextmanager
def serving(settings: Any, **options: Any) -> Iterator[Any]:
    """A test client on the real app over `settings`, with the API key; closed afterwards."""
    from litestar.testing import TestClient

    from interfaces.http.app import create_app

    app = create_app(settings, **options)
    try:
        with TestClient(app) as client:
            client.headers.update(AUTH)
            yield client
    finally:
        app.state.parts.close()


def settle(client: Any) -> None:
    """Let the read models catch up with the store (what the background runner does anyway)."""
    client.app.state.parts.projector.catch_up()


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text exposition (prometheus_client's own parser), or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def state_subset(state: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The fields of `state` that `expected` names, for comparing with expected_final_state."""
    return {key: state[key] for key in expected}


def force_fault(monkeypatch: Any, event_id: str, error: type[Exception] = RuntimeError) -> Any:
    """A bug forced into the write side's state code for one fact (both ways it folds: a fact
    in order extends the state, a late one derives it again); returns the fix, to deploy it."""
    import domain.prescription

    real_derive, real_extend = domain.prescription.derive_state, domain.prescription.extend_state

    def derive(subject: str, facts: Any) -> Any:
        facts = list(facts)
        if any(f.event_id == event_id for f in facts):
            raise error("bug forced by the test")
        return real_derive(subject, facts)

    def extend(state: Any, fact: Any) -> Any:
        if fact.event_id == event_id:
            raise error("bug forced by the test")
        return real_extend(state, fact)

    monkeypatch.setattr(domain.prescription, "derive_state", derive)
    monkeypatch.setattr(domain.prescription, "extend_state", extend)

    def fix() -> None:
        monkeypatch.setattr(domain.prescription, "derive_state", real_derive)
        monkeypatch.setattr(domain.prescription, "extend_state", real_extend)

    return fix
