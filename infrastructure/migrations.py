"""Applies the versioned SQL in `migrations/<dialect>/` in order, each once, and records it."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from importlib import resources

from infrastructure.database import StoreNotReadyError, connect_postgres, connect_sqlite
from infrastructure.settings import Settings

__all__ = ["MigrationError", "StoreNotReadyError", "check_ready", "migrate", "pending"]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "drx_schema_migrations"
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# Serialises concurrent `drx migrate` / `drx serve` starts on one PostgreSQL database.
_PG_ADVISORY_LOCK = 0x44525821


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available(dialect: str) -> list[Migration]:
    folder = resources.files("migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two {dialect} migrations share a version number: {versions}")
    return found


def migrate(settings: Settings) -> list[Migration]:
    """Apply what is pending; return what was applied. Safe to run from several processes."""
    if settings.dialect == "postgresql":
        return _migrate_postgres(settings)
    return _migrate_sqlite(settings)


def pending(settings: Settings) -> list[Migration]:
    """What `migrate` would apply; raises when the database cannot be reached (and, for SQLite,
    `StoreNotReadyError` when there is no store: asking creates none)."""
    if settings.dialect == "postgresql":
        applied = _applied_postgres(settings)
    else:
        with connect_sqlite(settings) as conn:
            applied = _applied_sqlite(conn)
    return _check(applied, available(settings.dialect))


def check_ready(settings: Settings) -> None:
    """Refuse, in one sentence, a store that is not there, cannot be reached, or is not fully
    migrated: what a command other than `drx migrate` and `drx serve` must not go on with."""
    todo = pending(settings)
    if todo:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
        raise StoreNotReadyError(
            f"{settings.describe_database()} is not migrated (pending: {names}): run drx migrate"
        )


def _check(applied: dict[int, str], migrations: list[Migration]) -> list[Migration]:
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} was edited after it was "
                "applied; add a new migration instead"
            )
    return [m for m in migrations if m.version not in applied]


_CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
    " applied_at text NOT NULL)"
)


def _applied_postgres(settings: Settings) -> dict[int, str]:
    with connect_postgres(settings) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (MIGRATIONS_TABLE,)).fetchone()
        if not exists or exists[0] is None:
            return {}
        rows = conn.execute(f"SELECT version, checksum FROM {MIGRATIONS_TABLE}").fetchall()
        return {int(str(v)): str(c) for v, c in rows}


def _migrate_postgres(settings: Settings) -> list[Migration]:
    done: list[Migration] = []
    with connect_postgres(settings) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{settings.postgres_schema}"')
        conn.execute("SELECT pg_advisory_lock(%s)", (_PG_ADVISORY_LOCK,))
        try:
            conn.execute(_CREATE_TABLE)
            rows = conn.execute(f"SELECT version, checksum FROM {MIGRATIONS_TABLE}").fetchall()
            todo = _check({int(str(v)): str(c) for v, c in rows}, available("postgresql"))
            for migration in todo:
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} VALUES (%s, %s, %s, now()::text)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_PG_ADVISORY_LOCK,))
    return done


def _applied_sqlite(conn: sqlite3.Connection) -> dict[int, str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    ).fetchone()
    if not exists:
        return {}
    rows = conn.execute(f"SELECT version, checksum FROM {MIGRATIONS_TABLE}").fetchall()
    return {int(v): str(c) for v, c in rows}


def _statements(sql: str) -> list[str]:
    """Split a script into statements, since executescript() would commit on its own."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in current.splitlines()
    ):
        raise MigrationError("a migration ends with an incomplete SQL statement")
    return statements


def _migrate_sqlite(settings: Settings) -> list[Migration]:
    done: list[Migration] = []
    with connect_sqlite(settings, create=True) as conn:
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time; others wait for the lock
        try:
            conn.execute(_CREATE_TABLE)
            todo = _check(_applied_sqlite(conn), available("sqlite"))
            for migration in todo:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?, datetime('now'))",
                    (migration.version, migration.name, migration.checksum),
                )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return done
