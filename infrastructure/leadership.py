"""Which process runs the projections (or the dispatcher): the one holding a lock that dies
with it.

PostgreSQL: a session advisory lock on a connection of its own (released when the process or its
connection dies). SQLite: an exclusive `flock` on a file beside the database (released by the OS
when the process dies). Every web worker tries; one leads, the others stand by and take over.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from typing import IO, Any, Protocol

import psycopg

from infrastructure.database import PRIVATE, postgres_conninfo
from infrastructure.settings import Settings

log = logging.getLogger(__name__)


class Leadership(Protocol):
    def acquire(self) -> bool:
        """True while this process leads; tries to take the lead when it does not."""

    def release(self) -> None: ...


# The lead's connection, on a network that drops it silently (a half-open connection): the
# leader's check fails within 10-15 s (`HALF_OPEN_BOUND`, in `postgres_conninfo`), while the
# server frees the lock only after its own keepalives find the session dead (30 s idle, then 3
# probes 10 s apart): the old dispatcher has stopped before a standby can take the lock.
# Without these, the check could hang for as long as the system's TCP retries (15 minutes and
# more) while the leader's tasks go on. (The projector is fenced by its tracking position
# besides: a batch from a lead it lost rolls back.) The server's side is SET on the session,
# not sent as startup `options`, which PgBouncer refuses by default.
LEAD_SESSION = (
    "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"
)


class PostgresLeadership:
    def __init__(self, settings: Settings, role: str = "projections") -> None:
        self._settings, self._role = settings, role
        digest = hashlib.sha256(f"drx-{role}:{settings.postgres_schema}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                log.warning("the lead of the %s lost with its connection", self._role)
                self.release()
        conn = psycopg.connect(postgres_conninfo(self._settings), autocommit=True)
        try:
            conn.execute(LEAD_SESSION)
        except psycopg.Error:
            conn.close()
            raise
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        if row and row[0]:
            self._conn = conn
            log.info("this process now runs the %s", self._role)
            return True
        conn.close()
        return False

    def release(self) -> None:
        """Unlocks before closing: a closed connection's lock is freed only once the server's
        backend has exited, a moment later, so a standby asking at once could be refused."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


class FileLeadership:
    def __init__(self, path: str, role: str = "projections") -> None:
        self._path, self._role = path, role
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        # Held open for as long as we lead; private, as every file beside the database is.
        file = os.fdopen(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE), "a")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._file = file
        log.info("this process (pid %d) now runs the %s", os.getpid(), self._role)
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def leadership_for(
    settings: Settings, role: str = "projections"
) -> PostgresLeadership | FileLeadership:
    """The lead of one role (the projections, the subscriptions' dispatcher) on the database."""
    if settings.dialect == "postgresql":
        return PostgresLeadership(settings, role)
    return FileLeadership(f"{settings.sqlite_path}.{role}.lock", role)
