"""The secret the console's sessions are signed with, shared through the database.

The first process that needs it makes 32 random bytes and inserts them (a second process racing
it inserts nothing, and reads the first's), so every web worker of every `drx serve` on the
database signs and checks sessions with the same key. With DRX_ENCRYPTION_KEY set, the key used
is an HMAC of the stored secret under it: the database alone then cannot forge a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from domain.instants import format_instant
from infrastructure.database import ReadDatabase


def console_secret(db: ReadDatabase, encryption_key: str = "") -> bytes:
    stored = _stored(db) or _made(db)
    if not encryption_key:
        return stored
    return hmac.new(base64.b64decode(encryption_key), stored, hashlib.sha256).digest()


def _stored(db: ReadDatabase) -> bytes | None:
    rows = db.query("SELECT secret FROM drx_console_secret WHERE id = 1")
    return base64.b64decode(str(rows[0][0])) if rows else None


def _made(db: ReadDatabase) -> bytes:
    with db.transaction() as cursor:
        cursor.execute(
            "INSERT INTO drx_console_secret (id, secret, created_at) VALUES (1, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (base64.b64encode(secrets.token_bytes(32)).decode(), format_instant(datetime.now(UTC))),
        )
    made = _stored(db)
    assert made is not None
    return made
