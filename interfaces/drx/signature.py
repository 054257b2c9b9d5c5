"""Standard Webhooks signatures, as DRx signs its deliveries: the check of a delivery against
every configured secret, and the signing the service's own senders (`drx send`, the simulator,
the benchmarks) use to act as DRx.

The signature is an HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the bytes
of the body as they arrived: so a body that is not UTF-8 can still be authenticated (and then
refused as not JSON, a 400, rather than as unsigned). The tests sign with the `standardwebhooks`
library itself, never with this module, so that the two are checked against each other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TOLERANCE_S = 5 * 60  # fixed by the contract (and by the standardwebhooks library)
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
# DRx sends one signature, two while it rotates its secret: a few more are tolerated, and a
# header longer than this is refused before anything is computed.
MAX_SIGNATURES = 8
MAX_SIGNATURE_HEADER = 1024


class SignatureError(Exception):
    """The delivery is not authentic or not fresh: a 401. The message names no secret."""


class SecretError(ValueError):
    """A configured secret cannot be used; the message says which one by position, not value."""


@dataclass(frozen=True)
class SignedHeaders:
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (padding may be left out, as the
    standardwebhooks library allows); SecretError for anything else, a typo included."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith(SECRET_PREFIX) or not key:
        raise SecretError("not a whsec_<base64> secret")
    return key


def _mac(key: bytes, webhook_id: bytes, webhook_timestamp: str, body: bytes) -> bytes:
    signed = webhook_id + b"." + webhook_timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def _as_sent(header_value: str) -> bytes:
    """A header's bytes as they came: the server gives header values decoded as latin-1, and a
    sender signs its `webhook-id`'s own (UTF-8) bytes, so `msg_é` arrives as `msg_Ã©`. A value
    latin-1 cannot hold was never a header's: its UTF-8."""
    try:
        return header_value.encode("latin-1")
    except UnicodeEncodeError:
        return header_value.encode()


def sign(secret: str, webhook_id: str, webhook_timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header DRx would send with this body."""
    return sign_with_key(secret_key(secret), webhook_id, webhook_timestamp, body)


def sign_with_key(key: bytes, webhook_id: str, webhook_timestamp: int, body: bytes) -> str:
    """`sign` with the secret's key already decoded (`secret_key`): for many bodies."""
    return "v1," + _mac(key, webhook_id.encode(), str(webhook_timestamp), body).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    """The headers of a delivery signed now, as DRx sends them."""
    now = int(time.time())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, webhook_id, now, body),
    }


def signature_matches(
    keys: Sequence[bytes], webhook_id: str, webhook_timestamp: str, signature: str, body: bytes
) -> bool:
    """Whether any `v1,` entry of the header (the first 8, empty ones not counted) is the HMAC
    of the body under any key (compared in constant time); `webhook_id` as the server gave it
    (`_as_sent`). No time check: the audit asks this of deliveries stored long ago."""
    given = [
        entry[3:].encode()
        for entry in [e for e in signature.split(" ") if e][:MAX_SIGNATURES]
        if entry.startswith("v1,") and entry.isascii()
    ]
    for key in keys:
        expected = _mac(key, _as_sent(webhook_id), webhook_timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in given):
            return True
    return False


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        keys = []
        for position, secret in enumerate(secrets, start=1):
            try:
                keys.append(secret_key(secret))
            except SecretError:
                raise SecretError(
                    f"DRX_WEBHOOK_SECRETS: secret #{position} is not a whsec_<base64> secret"
                ) from None
        self._keys = tuple(keys)

    def matches(self, webhook_id: str, webhook_timestamp: str, signature: str, body: str) -> bool:
        """Whether a stored delivery's signature holds under any secret (the audit's question:
        authenticity, whatever its age)."""
        return signature_matches(
            self._keys, webhook_id, webhook_timestamp, signature, body.encode("utf-8")
        )

    def verify(self, body: bytes, headers: Mapping[str, str]) -> SignedHeaders:
        values = {name: headers.get(name, "").strip() for name in HEADERS}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise SignatureError(f"missing header(s): {', '.join(missing)}")
        if len(values["webhook-signature"]) > MAX_SIGNATURE_HEADER:
            raise SignatureError(
                f"webhook-signature is longer than {MAX_SIGNATURE_HEADER} characters"
            )
        timestamp = values["webhook-timestamp"]
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise SignatureError("webhook-timestamp must be Unix seconds")
        if abs(time.time() - int(timestamp)) > TOLERANCE_S:
            raise SignatureError(
                "webhook-timestamp is more than 5 minutes from the receiver's clock"
            )
        if not self._keys:
            raise SignatureError("no webhook secret is configured")
        signature = values["webhook-signature"]
        if not any(entry.startswith("v1,") for entry in signature.split(" ")):
            raise SignatureError("webhook-signature is malformed (expected 'v1,<base64>' entries)")
        if not signature_matches(self._keys, values["webhook-id"], timestamp, signature, body):
            raise SignatureError("no signature matches a configured secret")
        return SignedHeaders(*(values[name] for name in HEADERS))
