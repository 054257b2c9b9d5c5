"""Subscriptions as stored: internal apps' endpoints, each with its own secret, its filters,
where it stands in the change feed, its state and its attempts log (plain tables: they are
configuration and bookkeeping, not facts). The dispatcher (`interfaces/dispatcher.py`) moves a
subscription's position only from the value it read, and only within the same `generation`, so
that a pause, rewind or removal made meanwhile (by the API or the CLI, in another process) wins
over a delivery in flight.

A secret is stored as given, or, when DRX_ENCRYPTION_KEY is set, encrypted with AES-GCM under
that key (`aesgcm:` and the base64 of nonce and ciphertext): a copy of the database does not
give away the secrets that internal apps check our signatures with.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from domain.instants import sortable_instant
from domain.names import CHANGE_TYPES, STATUSES
from infrastructure.change_feed import ChangeFeed, ChangeFilter
from infrastructure.database import Cursor, ReadDatabase, insert_rows

ACTIVE, PAUSED, DISABLED = "active", "paused", "disabled"
KEPT_ATTEMPTS = 10_000  # per subscription, the latest
PRUNE_EVERY = 100  # writes (each up to 100 ms of attempts): how often one trims the log
_ENCRYPTED = "aesgcm:"
_COLUMNS = (
    "id, url, description, types, statuses, secret, state, position, generation, failures,"
    " failing_since, retry_at, disabled_reason, created_at"
)


class SubscriptionNotFoundError(LookupError):
    """No subscription with that id."""


class SecretBox:
    """Encrypts subscription secrets at rest when a key is configured."""

    def __init__(self, key_base64: str) -> None:
        self._aead = None
        if key_base64:
            # Imported when a key is configured: its library is 6 MB of every process.
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

            self._aead = AESGCM(base64.b64decode(key_base64))

    def seal(self, secret: str) -> str:
        if self._aead is None:
            return secret
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), b"drx-subscription")
        return _ENCRYPTED + base64.b64encode(sealed).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(_ENCRYPTED):
            return stored
        if self._aead is None:
            raise RuntimeError(
                "a subscription secret is encrypted: set DRX_ENCRYPTION_KEY to the key it was "
                "stored with"
            )
        sealed = base64.b64decode(stored.removeprefix(_ENCRYPTED))
        return self._aead.decrypt(sealed[:12], sealed[12:], b"drx-subscription").decode()


class SubscriptionError(ValueError):
    """A subscription's URL or filter is not one it can have; the message says why."""


# An http(s) URL with a host (a name or an IPv4 address; an IPv6 literal wants a name), an
# optional port (1-65535), no user:password@ (never sent: the secret authenticates us), and
# printable ASCII only (a path outside it is percent-encoded by its owner): what the API's
# schema publishes, what is stored, and what goes on the request line as it is.
URL_PATTERN = (
    # The host: labels of 1-63 characters between dots (a name no resolver takes, "a..b" or
    # a label over 63, would fail every POST for 3 days before the subscription is disabled).
    r"^https?://[A-Za-z0-9_~%-]{1,63}(?:\.[A-Za-z0-9_~%-]{1,63})*\.?"
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(?:[/?#][!-~]*)?$"
)
# (Character classes spelt out, not \s: Python's and JSON Schema's regexes differ on it.)
URL_MAX = 2000


DESCRIPTION_MAX = 500
_CONTROLS = r"\x00-\x1f\x7f-\x9f"  # C0, DEL and C1, as a regular expression's class
_CONTROL = re.compile(f"[{_CONTROLS}]")
DESCRIPTION_PATTERN = f"^[^{_CONTROLS}]*$"  # what check_description takes, for the API's document


def check_description(description: str | None) -> str | None:
    """A line of text for people: at most 500 characters, no control characters (U+0000 is
    more than PostgreSQL's text holds; a line break would split `drx subscriptions list`)."""
    if description is not None and (
        len(description) > DESCRIPTION_MAX or _CONTROL.search(description)
    ):
        raise SubscriptionError(
            f"description must be at most {DESCRIPTION_MAX} characters, without control characters"
        )
    return description


def check_url(url: str) -> str:
    """An http(s) URL with a host (`URL_PATTERN`), at most 2,000 characters. Private addresses
    are allowed: subscribers are internal apps, usually on the organisation's own network."""
    if len(url) > URL_MAX or not re.fullmatch(URL_PATTERN, url):  # $ alone lets a final \n by
        raise SubscriptionError(
            "url must be an http:// or https:// URL with a host (labels of 1 to 63 characters "
            "between dots), an optional port (1-65535), no user:password@, and printable ASCII "
            "only (percent-encode the rest)"
        )
    return url


def check_filters(types: Sequence[str], statuses: Sequence[str]) -> None:
    unknown = set(types) - set(CHANGE_TYPES)
    if unknown:
        raise SubscriptionError(f"types: a change type is one of {', '.join(CHANGE_TYPES)}")
    if set(statuses) - set(STATUSES):
        raise SubscriptionError(f"statuses: a status is one of {', '.join(STATUSES)}")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _now() -> str:
    return sortable_instant(datetime.now(UTC))


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    description: str | None
    types: tuple[str, ...]
    statuses: tuple[str, ...]
    sealed_secret: str
    state: str
    position: int
    generation: int
    failures: int
    failing_since: str | None
    retry_at: str | None
    disabled_reason: str | None
    created_at: str

    @property
    def filter(self) -> ChangeFilter:
        return ChangeFilter(types=self.types, statuses=self.statuses)

    def webhook_id(self, position: int) -> str:
        """The same for every attempt at one change; another after a rewind, so that a
        receiver that keeps the ids it handled takes the change again."""
        suffix = f"_r{self.generation}" if self.generation else ""
        return f"msg_{self.id}_{position}{suffix}"


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as the dispatcher made it, to be written."""

    position: int
    webhook_id: str
    status: int | None
    error: str | None
    took_ms: int
    at: str = field(default_factory=_now)  # when it was made, not when it was written


@dataclass(frozen=True)
class Attempt:
    id: int
    subscription_id: str
    position: int
    webhook_id: str
    at: str
    status: int | None
    error: str | None
    duration_ms: int


class SubscriptionStore:
    def __init__(self, db: ReadDatabase, feed: ChangeFeed, box: SecretBox) -> None:
        self.db, self.feed, self.box = db, feed, box
        # Each subscription's writes, counted apart: with one count for all, subscriptions
        # writing in turn could each time land the count's round number on the same one, and
        # the others' logs were never trimmed.
        self._writes: Counter[str] = Counter()

    # Reading

    def _one(self, subscription_id: str) -> Subscription:
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM drx_subscriptions WHERE id = %s",  # noqa: S608
            (subscription_id,),
        )
        if not rows:
            raise SubscriptionNotFoundError(subscription_id)
        return _subscription(rows[0])

    def get(self, subscription_id: str) -> Subscription:
        return self._one(subscription_id)

    def all(self) -> list[Subscription]:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM drx_subscriptions ORDER BY created_at, id")  # noqa: S608
        return [_subscription(row) for row in rows]

    def secret(self, subscription: Subscription) -> str:
        return self.box.open(subscription.sealed_secret)

    def lag(self, subscription: Subscription, cap: int = 100_000) -> int:
        """How many matching changes it has still to get (counted up to `cap`)."""
        return self.feed.count_after(subscription.position, subscription.filter, cap)

    def last_attempt(self, subscription_id: str) -> Attempt | None:
        found = self.attempts(subscription_id, 1, None)
        return found[0] if found else None

    def attempts(self, subscription_id: str, limit: int, before: int | None) -> list[Attempt]:
        """Newest first; `before` an attempt id to continue after."""
        columns = "id, subscription_id, position, webhook_id, at, status, error, duration_ms"
        if before is None:
            rows = self.db.query(
                f"SELECT {columns} FROM drx_subscription_attempts"  # noqa: S608
                " WHERE subscription_id = %s ORDER BY id DESC LIMIT %s",
                (subscription_id, limit),
            )
        else:
            rows = self.db.query(
                f"SELECT {columns} FROM drx_subscription_attempts"  # noqa: S608
                " WHERE subscription_id = %s AND id < %s ORDER BY id DESC LIMIT %s",
                (subscription_id, before, limit),
            )
        return [Attempt(*row) for row in rows]

    # Changing, from the API or the CLI

    def create(
        self,
        url: str,
        types: Sequence[str] = (),
        statuses: Sequence[str] = (),
        description: str | None = None,
    ) -> tuple[Subscription, str]:
        """A new active subscription from the feed's head now (it gets the changes from now
        on; rewind it for older ones), and its secret, shown this once."""
        check_url(url)
        check_description(description)
        check_filters(types, statuses)
        subscription_id = "sub_" + secrets.token_hex(8)
        secret = new_secret()
        with self.db.transaction() as cursor:
            cursor.execute(
                f"INSERT INTO drx_subscriptions ({_COLUMNS})"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, 0, NULL, NULL, NULL, %s)",
                (
                    subscription_id,
                    url,
                    description,
                    json.dumps(list(types)),
                    json.dumps(list(statuses)),
                    self.box.seal(secret),
                    ACTIVE,
                    self.feed.head(),
                    _now(),
                ),
            )
        return self._one(subscription_id), secret

    def set_state(self, subscription_id: str, state: str) -> Subscription:
        """Pause, or make active (a disabled one too: its failures are forgotten)."""
        if state not in (ACTIVE, PAUSED):
            raise ValueError(state)
        reset = ", failures = 0, failing_since = NULL, retry_at = NULL, disabled_reason = NULL"
        self._update(subscription_id, f"state = %s{reset if state == ACTIVE else ''}", (state,))
        return self._one(subscription_id)

    def rewind(self, subscription_id: str, after: int) -> Subscription:
        """Deliver again from after `after` (with new webhook ids), failures forgotten. A
        position past the feed's head is the head: nothing yet to come is skipped."""
        after = min(after, self.feed.head())
        self._update(
            subscription_id,
            "position = %s, generation = generation + 1, failures = 0, failing_since = NULL,"
            " retry_at = NULL",
            (after,),
        )
        return self._one(subscription_id)

    def remove(self, subscription_id: str) -> None:
        with self.db.transaction() as cursor:
            cursor.execute("DELETE FROM drx_subscriptions WHERE id = %s", (subscription_id,))
            if cursor.rowcount == 0:
                raise SubscriptionNotFoundError(subscription_id)
            cursor.execute(
                "DELETE FROM drx_subscription_attempts WHERE subscription_id = %s",
                (subscription_id,),
            )

    def _update(self, subscription_id: str, sets: str, params: Sequence[Any]) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(
                f"UPDATE drx_subscriptions SET {sets} WHERE id = %s",  # noqa: S608
                (*params, subscription_id),
            )
            if cursor.rowcount == 0:
                raise SubscriptionNotFoundError(subscription_id)

    # The dispatcher's bookkeeping: it moves the row only from what the dispatcher read.

    def record(
        self,
        subscription: Subscription,
        position: int,
        attempts: Sequence[AttemptRecord],
        *,
        state: str | None = None,
        failures: int = 0,
        failing_since: str | None = None,
        retry_at: str | None = None,
        disabled_reason: str | None = None,
    ) -> Subscription | None:
        """Where the subscription stands after `attempts` (delivered up to `position`; with no
        failure given, its failures are over), in one transaction; None, and nothing written,
        when it was changed meanwhile (paused, rewound, resumed, removed)."""
        after = replace(
            subscription,
            position=position,
            state=state or subscription.state,
            failures=failures,
            failing_since=failing_since,
            retry_at=retry_at,
            disabled_reason=disabled_reason,
        )
        with self.db.transaction() as cursor:
            cursor.execute(
                # A pause made meanwhile stays (the state changes here only to disabled), and
                # the progress made before it is kept: a resume does not send it again.
                "UPDATE drx_subscriptions SET position = %s, state = COALESCE(%s, state),"
                " failures = %s, failing_since = %s, retry_at = %s,"
                " disabled_reason = COALESCE(%s, disabled_reason)"
                " WHERE id = %s AND generation = %s AND position = %s"
                # A resume meanwhile forgot the failures: the streak read is over. (COALESCE,
                # not IS NOT DISTINCT FROM, which SQLite has only since 3.39.)
                " AND COALESCE(failing_since, '') = COALESCE(%s, '')",
                (
                    after.position,
                    state,
                    after.failures,
                    after.failing_since,
                    after.retry_at,
                    disabled_reason,
                    subscription.id,
                    subscription.generation,
                    subscription.position,
                    subscription.failing_since,
                ),
            )
            if cursor.rowcount == 0:
                return None
            insert_rows(
                cursor,
                self.db.dialect,
                "INSERT INTO drx_subscription_attempts"
                " (subscription_id, position, webhook_id, at, status, error, duration_ms)",
                ("text", "bigint", "text", "text", "integer", "text", "integer"),
                [
                    (subscription.id, a.position, a.webhook_id, a.at, a.status, a.error, a.took_ms)
                    for a in attempts
                ],
            )
            self._writes[subscription.id] += 1
            if self._writes[subscription.id] % PRUNE_EVERY == 0:
                self._prune(cursor, subscription.id)
        return after

    @staticmethod
    def _prune(cursor: Cursor, subscription_id: str) -> None:
        """Keep the latest KEPT_ATTEMPTS attempts of a subscription (the log is for looking
        into a bad day, not an archive: at 300 changes a second it would grow by 26 million
        rows a day)."""
        cursor.execute(
            "SELECT id FROM drx_subscription_attempts WHERE subscription_id = %s"
            " ORDER BY id DESC LIMIT 1 OFFSET %s",
            (subscription_id, KEPT_ATTEMPTS),
        )
        oldest_kept = cursor.fetchone()
        if oldest_kept is not None:
            cursor.execute(
                "DELETE FROM drx_subscription_attempts WHERE subscription_id = %s AND id <= %s",
                (subscription_id, oldest_kept[0]),
            )


def _subscription(row: Sequence[Any]) -> Subscription:
    (sid, url, description, types, statuses, secret, state, position, generation) = row[:9]
    failures, failing_since, retry_at, disabled_reason, created_at = row[9:]
    return Subscription(
        sid,
        url,
        description,
        tuple(json.loads(types)),
        tuple(json.loads(statuses)),
        secret,
        state,
        int(position),
        int(generation),
        int(failures),
        failing_since,
        retry_at,
        disabled_reason,
        created_at,
    )
