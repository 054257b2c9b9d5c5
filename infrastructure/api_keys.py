"""API keys and their scopes: those configured in DRX_API_KEYS, and those made with
`drx keys create` (the `drx_api_keys` table holds only each key's SHA-256, never the key).

Every process checks keys against a `KeyRing`: the configured keys, and a copy of the stored
ones that a thread of its own reloads every `REFRESH_S`, so that a key revoked by `drx keys
revoke` is refused by every worker within that (the contract allows 5 s) while a request never
waits for the database to check its key. While the database cannot be read, the last copy
stands. A key is looked up by its hash: the keys are random, so the lookup's timing tells
nothing about any key.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from domain.instants import format_instant, sortable_instant
from infrastructure.database import ReadDatabase
from infrastructure.periodic import Periodic
from infrastructure.settings import SCOPES, ConfiguredKey, scopes_in

log = logging.getLogger(__name__)

REFRESH_S = 1.0
# How often a key's `last_used_at` is written: a list of keys wants the day, not the second.
TOUCH_S = 60.0
KEY_PREFIX = "drx_"
# How the access log names DRX_API_KEYS' unnamed entries (a command is `cli:USER`, and no
# key's name holds a `:`).
RESERVED_PREFIX = "DRX_API_KEYS["


class ApiKeyError(ValueError):
    """A key cannot be made or revoked as asked; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    """Who a request's key says it is, and what it may do."""

    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class StoredKey:
    name: str
    scopes: tuple[str, ...]
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> str:
    return format_instant(datetime.now(UTC))


def parse_scopes(text: str) -> tuple[str, ...]:
    """`read,operate` (or `read+operate`) as the scopes in their canonical order."""
    scopes = scopes_in(text.replace(",", "+"))
    if scopes is None:
        raise ApiKeyError(f"scopes are one or more of {', '.join(SCOPES)}")
    return scopes


class KeyStore:
    """The `drx_api_keys` table."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def create(self, name: str, scopes: tuple[str, ...]) -> str:
        """Make a key; return it (shown once: only its hash is kept)."""
        if not name or len(name) > 64 or not name.isprintable() or ":" in name:
            raise ApiKeyError("a key's name is 1 to 64 printable characters, without ':'")
        if name.startswith(RESERVED_PREFIX):
            raise ApiKeyError(f"names starting {RESERVED_PREFIX} are the access log's own")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.db.transaction() as cursor:
                cursor.execute(
                    "INSERT INTO drx_api_keys (name, key_hash, scopes, created_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (name, key_hash(key), "+".join(scopes), _now()),
                )
        except (psycopg.IntegrityError, sqlite3.IntegrityError):  # the active names' index
            raise ApiKeyError(
                f"a key named {name} exists: revoke it first, or pick a new name"
            ) from None
        return key

    def revoke(self, name: str) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE drx_api_keys SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL",
                (_now(), name),
            )
            if cursor.rowcount == 0:
                raise ApiKeyError(f"no key named {name} (drx keys list shows them)")

    def listed(self) -> list[StoredKey]:
        rows = self.db.query(
            "SELECT name, scopes, created_at, last_used_at, revoked_at FROM drx_api_keys"
            " ORDER BY name, id"
        )
        return [
            StoredKey(str(name), tuple(str(scopes).split("+")), created, used, revoked)
            for name, scopes, created, used, revoked in rows
        ]

    def active(self) -> dict[str, ApiKey]:
        """Each usable key's hash, and who it is."""
        rows = self.db.query(
            "SELECT key_hash, name, scopes FROM drx_api_keys WHERE revoked_at IS NULL"
        )
        return {
            str(hashed): ApiKey(str(name), frozenset(str(scopes).split("+")))
            for hashed, name, scopes in rows
        }

    def touch(self, used: dict[str, float]) -> None:
        """Each key's last use (`used`: by hash, the epoch seconds of its use): the key that
        was used, revoked since or not (by name, a use just before a revocation was lost, or
        credited to a new key of that name), never earlier than one another process wrote."""
        with self.db.transaction(durable=False) as cursor:
            for hashed, at in sorted(used.items()):
                instant = sortable_instant(datetime.fromtimestamp(at, UTC))
                cursor.execute(
                    "UPDATE drx_api_keys SET last_used_at = %s WHERE key_hash = %s"
                    " AND (last_used_at IS NULL OR last_used_at < %s)",
                    (instant, hashed, instant),
                )


class KeyRing:
    """The keys this process accepts (see the module's docstring)."""

    def __init__(
        self, configured: list[ConfiguredKey], store: KeyStore, refresh_s: float = REFRESH_S
    ) -> None:
        self._configured = {key_hash(k.key): ApiKey(k.name, k.scopes) for k in configured}
        self._store, self._refresh_s = store, refresh_s
        self._stored: dict[str, ApiKey] = {}
        self._used: dict[str, float] = {}  # stored keys' hashes: when each was last used
        self._reloader = Periodic("drx-keys", refresh_s, self._tick)
        self._readable, self._since_touch = True, 0.0

    def find(self, key: str) -> ApiKey | None:
        """Who `key` is, or None when it is no key of ours (or a revoked one)."""
        hashed = key_hash(key)
        found = self._configured.get(hashed) or self._stored.get(hashed)
        if found is not None and hashed in self._stored:
            self._used[hashed] = time.time()
        return found

    def named(self, name: str) -> dict[str, ApiKey]:
        """The accepted keys of that name, by hash (a console session names its key, and ends
        when no key of that name and hash is accepted any more)."""
        return {
            hashed: key
            for hashed, key in (*self._configured.items(), *self._stored.items())
            if key.name == name
        }

    def start(self) -> None:
        """Load the stored keys, then keep reloading them in a thread of this process."""
        self._reloader.start(first=self._reload)

    def stop(self) -> None:
        self._reloader.stop()
        self.write_uses()

    def _reload(self) -> bool:
        try:
            self._stored = self._store.active()
        except Exception:  # the database is away: the last copy stands
            return False
        return True

    def _tick(self) -> None:
        """A reload; and, at most every TOUCH_S, the last use of the keys used since."""
        self._since_touch += self._refresh_s
        was_readable, self._readable = self._readable, self._reload()
        if was_readable != self._readable:
            log.warning(
                "the stored API keys %s",
                "can be read again"
                if self._readable
                else "cannot be read now: the last copy stands",
            )
        if self._readable and self._since_touch >= TOUCH_S:
            self._since_touch = 0.0
            self.write_uses()

    def write_uses(self) -> None:
        """Write the stored keys' last use since the last write (kept for the next one when the
        database cannot take it)."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            self._store.touch(used)
        except Exception as exc:
            for hashed, at in used.items():  # a use since then is the later one
                self._used.setdefault(hashed, at)
            log.warning("the keys' last use was not written (%s)", type(exc).__name__)
