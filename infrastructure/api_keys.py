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
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from domain.instants import format_instant
from infrastructure.database import ReadDatabase
from infrastructure.settings import SCOPES, ConfiguredKey

log = logging.getLogger(__name__)

REFRESH_S = 1.0
# How often a key's `last_used_at` is written: a list of keys wants the day, not the second.
TOUCH_S = 60.0
KEY_PREFIX = "drx_"


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
    asked = {s.strip() for s in text.replace("+", ",").split(",") if s.strip()}
    unknown = asked - set(SCOPES)
    if unknown or not asked:
        raise ApiKeyError(f"scopes are one or more of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in asked)


class KeyStore:
    """The `drx_api_keys` table."""

    def __init__(self, db: ReadDatabase) -> None:
        self.db = db

    def create(self, name: str, scopes: tuple[str, ...]) -> str:
        """Make a key; return it (shown once: only its hash is kept)."""
        if not name or len(name) > 64 or not name.isprintable() or ":" in name:
            raise ApiKeyError("a key's name is 1 to 64 printable characters, without ':'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT 1 FROM drx_api_keys WHERE name = %s AND revoked_at IS NULL", (name,)
            )
            if cursor.fetchone() is not None:
                raise ApiKeyError(f"a key named {name} exists: revoke it first, or pick a new name")
            cursor.execute(
                "INSERT INTO drx_api_keys (name, key_hash, scopes, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (name, key_hash(key), "+".join(scopes), _now()),
            )
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

    def touch(self, names: set[str]) -> None:
        at = _now()
        with self.db.transaction(durable=False) as cursor:
            for name in sorted(names):
                cursor.execute(
                    "UPDATE drx_api_keys SET last_used_at = %s"
                    " WHERE name = %s AND revoked_at IS NULL",
                    (at, name),
                )


class KeyRing:
    """The keys this process accepts (see the module's docstring)."""

    def __init__(
        self, configured: list[ConfiguredKey], store: KeyStore, refresh_s: float = REFRESH_S
    ) -> None:
        self._configured = {key_hash(k.key): ApiKey(k.name, k.scopes) for k in configured}
        self._store, self._refresh_s = store, refresh_s
        self._stored: dict[str, ApiKey] = {}
        self._used: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def find(self, key: str) -> ApiKey | None:
        """Who `key` is, or None when it is no key of ours (or a revoked one)."""
        hashed = key_hash(key)
        found = self._configured.get(hashed) or self._stored.get(hashed)
        if found is not None and hashed in self._stored:
            self._used.add(found.name)
        return found

    def start(self) -> None:
        """Load the stored keys, then keep reloading them in a thread of this process."""
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()  # an ASGI host may run the app's lifespan more than once
            self._reload()
            self._thread = threading.Thread(target=self._run, name="drx-keys", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _reload(self) -> bool:
        try:
            self._stored = self._store.active()
        except Exception:  # the database is away: the last copy stands
            return False
        return True

    def _run(self) -> None:
        readable, since_touch = True, 0.0
        while not self._stop.wait(self._refresh_s):
            since_touch += self._refresh_s
            was_readable, readable = readable, self._reload()
            if was_readable != readable:
                log.warning(
                    "the stored API keys %s",
                    "can be read again" if readable else "cannot be read now: the last copy stands",
                )
            if readable and self._used and since_touch >= TOUCH_S:
                used, self._used, since_touch = self._used, set(), 0.0
                try:
                    self._store.touch(used)
                except Exception as exc:
                    log.warning("the keys' last use was not written (%s)", type(exc).__name__)
