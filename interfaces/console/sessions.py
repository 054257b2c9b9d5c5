"""The console's sessions: stateless, signed, ended by their key's revocation or a sign-out.

A session is a cookie `v1.<name>.<expires>.<csrf>.<mac>`: the key's name (base64url), when the
session ends (Unix seconds), the session's CSRF token, and an HMAC-SHA256 over those and the
SHA-256 of the key it was signed in with, under the secret every process shares through the
database (`infrastructure.console_secret`). Any web worker of any host checks it without a
lookup of its own: a request is let in while its session has not expired and a key of that
name and hash is still accepted with the `operate` scope (the key ring, reloaded every second),
so revoking the key (or replacing it under the same name) ends its sessions everywhere; a
signed-out session is refused too (`infrastructure/console_sign_outs.py`, checked by
`interfaces.console.routes.current_session`). The key itself is never in the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from infrastructure.api_keys import ApiKey

COOKIE = "drx_console"
SCOPE = "operate"
_VERSION = "v1"


@dataclass(frozen=True)
class Session:
    key_name: str
    expires_at: int  # Unix seconds
    csrf: str  # the token every state-changing form of this session carries


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(
        self, secret: bytes, lifetime_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret, self.lifetime_s, self.clock = secret, lifetime_s, clock

    def issue(self, key_name: str, key_hash: str) -> tuple[str, Session]:
        """A new session for the key (its name and hash): the cookie's value, and the session."""
        session = Session(key_name, int(self.clock() + self.lifetime_s), secrets.token_urlsafe(24))
        signed = self._signed(session)
        return f"{signed}.{self._mac(signed, key_hash)}", session

    def open(
        self, cookie: str, keys_named: Callable[[str], Mapping[str, ApiKey]]
    ) -> Session | None:
        """The session of a cookie, or None: malformed, forged, expired, or its key no longer
        accepted with the operate scope."""
        session = self._parsed(cookie)
        if session is None or session.expires_at <= self.clock():
            return None
        signed, _, mac = cookie.rpartition(".")
        for hashed, key in keys_named(session.key_name).items():
            # As bytes: compare_digest refuses a str that is not ASCII (a forged cookie's).
            expected = self._mac(signed, hashed).encode()
            if SCOPE in key.scopes and hmac.compare_digest(mac.encode(), expected):
                return session
        return None

    def _signed(self, session: Session) -> str:
        name = _b64(session.key_name.encode())
        return f"{_VERSION}.{name}.{session.expires_at}.{session.csrf}"

    def _mac(self, signed: str, key_hash: str) -> str:
        message = f"{signed}\n{key_hash}".encode()
        return _b64(hmac.new(self.secret, message, hashlib.sha256).digest())

    @staticmethod
    def _parsed(cookie: str) -> Session | None:
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        if not (parts[2].isascii() and parts[2].isdigit()):
            return None
        try:
            name = _unb64(parts[1]).decode()
        except ValueError:  # not base64, or not UTF-8
            return None
        return Session(name, int(parts[2]), parts[3])


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())
