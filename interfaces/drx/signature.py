"""Standard Webhooks verification of a DRx delivery against every configured secret."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOLERANCE_S = 5 * 60  # fixed by the standardwebhooks library and by the contract
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureError(Exception):
    """The delivery is not authentic or not fresh: a 401. The message names no secret."""


class SecretError(ValueError):
    """A configured secret cannot be used; the message says which one by position, not value."""


@dataclass(frozen=True)
class SignedHeaders:
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        hooks = []
        for position, secret in enumerate(secrets, start=1):
            try:
                hooks.append(Webhook(secret))
            except Exception as exc:
                raise SecretError(
                    f"DRX_WEBHOOK_SECRETS: secret #{position} is not a whsec_<base64> secret"
                ) from exc
        self._hooks = tuple(hooks)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> SignedHeaders:
        values = {name: headers.get(name, "").strip() for name in HEADERS}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise SignatureError(f"missing header(s): {', '.join(missing)}")
        try:
            sent = int(values["webhook-timestamp"])
        except ValueError:
            raise SignatureError("webhook-timestamp must be Unix seconds") from None
        if abs(time.time() - sent) > TOLERANCE_S:
            raise SignatureError(
                "webhook-timestamp is more than 5 minutes from the receiver's clock"
            )
        if not self._hooks:
            raise SignatureError("no webhook secret is configured")
        malformed = False
        for hook in self._hooks:
            try:
                hook.verify(body, dict(values), json_parse=False)
            except WebhookVerificationError:
                continue
            except ValueError:  # the library's answer to a malformed signature list or body
                malformed = True
                continue
            return SignedHeaders(*(values[name] for name in HEADERS))
        if malformed:
            raise SignatureError("webhook-signature is malformed (expected 'v1,<base64>' entries)")
        raise SignatureError("no signature matches a configured secret")
