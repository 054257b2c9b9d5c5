"""Console sessions ended by signing out, so that a copy of the cookie ends with it.

A session is a stateless signed cookie (`interfaces/console/sessions.py`); signing out deletes
the cookie in the browser and records the session here: the SHA-256 of its CSRF token (unique to
the session, and not usable from the table) until the session would have expired anyway, and
`SKEW_S` more (the hosts' clocks may differ). Every web worker keeps the ended sessions in
memory, reloaded every `REFRESH_S` in a thread of its own like the key ring, so a request, and
the console's live stream at each change, is checked without a lookup; the worker that signs
the session out refuses it at once (it keeps its own sign-outs apart from what it reads, so a
reload racing one never lets it back in), the others within a second. Rows past their end are
deleted at each sign-out. While the database cannot be read, the last copy stands; a sign-out
that cannot be recorded fails, and keeps the cookie.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from infrastructure.database import ReadDatabase
from infrastructure.periodic import Periodic

log = logging.getLogger(__name__)

REFRESH_S = 1.0
SKEW_S = 300  # how far another host's clock may be behind this one's


def session_id(csrf: str) -> str:
    return hashlib.sha256(csrf.encode()).hexdigest()


class SignOuts:
    def __init__(self, db: ReadDatabase, refresh_s: float = REFRESH_S) -> None:
        self.db = db
        self._ended: frozenset[str] = frozenset()  # as last read from the table
        # This process's own, with their ends: a reload that read the table just before one
        # was written must not let it in again for a second.
        self._own: dict[str, int] = {}
        self._guard = threading.Lock()
        self._reloader = Periodic("drx-sign-outs", refresh_s, self._reload)
        self._readable = True

    def record(self, csrf: str, expires_at: int) -> None:
        """End the session of that CSRF token everywhere (at once in this process)."""
        ended = session_id(csrf)
        now = int(time.time())
        with self.db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM drx_console_sign_outs WHERE expires_at <= %s", (now - SKEW_S,)
            )
            cursor.execute(
                "INSERT INTO drx_console_sign_outs (session_id, expires_at) VALUES (%s, %s)"
                " ON CONFLICT (session_id) DO NOTHING",
                (ended, expires_at),
            )
        with self._guard:
            self._own = {k: end for k, end in self._own.items() if end > now}
            self._own[ended] = expires_at

    def ended(self, csrf: str) -> bool:
        found = session_id(csrf)
        return found in self._ended or found in self._own

    def start(self) -> None:
        """Load the ended sessions, then keep reloading them in a thread of this process."""
        self._reloader.start(first=self._reload)

    def stop(self) -> None:
        self._reloader.stop()

    def _reload(self) -> None:
        try:
            rows = self.db.query(
                "SELECT session_id FROM drx_console_sign_outs WHERE expires_at > %s",
                (int(time.time()) - SKEW_S,),
            )
        except Exception:  # the database is away: the last copy stands
            if self._readable:
                log.warning("the console's sign-outs cannot be read now: the last copy stands")
            self._readable = False
            return
        if not self._readable:
            log.warning("the console's sign-outs can be read again")
        self._ended, self._readable = frozenset(str(row[0]) for row in rows), True
