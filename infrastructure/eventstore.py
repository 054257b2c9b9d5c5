"""The event store wiring: Settings to the eventsourcing library's configuration, in one place."""

from __future__ import annotations

from eventsourcing.persistence import PersistenceError
from eventsourcing.utils import get_topic

from domain.application import Prescriptions
from infrastructure.migrations import check_ready
from infrastructure.recorders import (
    BatchSQLiteApplicationRecorder,
    FailFastPostgresApplicationRecorder,
)
from infrastructure.settings import Settings

CIPHER_TOPIC = "eventsourcing.cryptography:AESCipher"


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing settings for the configured database.

    PostgreSQL: a small pool (each process opens `pool_size` connections, plus overflow under
    load), a lock timeout so a stuck writer turns into a retryable error instead of a hang, and
    not the library's database functions (its insert function skips the table lock, so with
    concurrent writers a follower could miss events); the recorder saves through its own,
    `drx_save`, which takes the lock (infrastructure/recorders.py).
    """
    env = {"CREATE_TABLE": "y" if settings.create_tables else "n"}
    if settings.encryption_key:
        # Each event's state (the fact and its data, the delivery's raw body and signature
        # headers) is encrypted with AES-GCM before it is stored, and authenticated when read.
        # By topic: the library imports the `cryptography` package (7 MiB per process) only then.
        env.update(CIPHER_TOPIC=CIPHER_TOPIC, CIPHER_KEY=settings.encryption_key)
    if settings.dialect == "sqlite":
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            SQLITE_DBNAME=settings.sqlite_path,
            SQLITE_LOCK_TIMEOUT=str(settings.sqlite_lock_timeout_s),
            APPLICATION_RECORDER_TOPIC=get_topic(BatchSQLiteApplicationRecorder),
        )
        return env
    pg = settings.postgres
    env.update(
        PERSISTENCE_MODULE="eventsourcing.postgres",
        POSTGRES_DBNAME=pg.dbname,
        POSTGRES_HOST=pg.host,
        POSTGRES_PORT=str(pg.port),
        POSTGRES_USER=pg.user,
        POSTGRES_PASSWORD=pg.password,
        POSTGRES_SCHEMA=settings.postgres_schema,
        POSTGRES_POOL_SIZE=str(settings.postgres_pool_size),
        POSTGRES_MAX_OVERFLOW=str(settings.postgres_max_overflow),
        POSTGRES_LOCK_TIMEOUT=str(settings.postgres_lock_timeout_s),
        POSTGRES_CONNECT_TIMEOUT=str(settings.postgres_connect_timeout_s),
        # No ping before each use of a pooled connection: it was a round trip on every one (three
        # per webhook batch). A connection broken by a database restart fails its statement
        # instead, the recorder tries once more on another (recorders.py), and at worst that
        # batch answers 503 with Retry-After; the pool drops broken connections as they return.
        POSTGRES_PRE_PING="n",
        POSTGRES_ENABLE_DB_FUNCTIONS="n",
        APPLICATION_RECORDER_TOPIC=get_topic(FailFastPostgresApplicationRecorder),
    )
    return env


class StoreKeyError(RuntimeError):
    """The stored events cannot be read with the configured DRX_ENCRYPTION_KEY (or its absence)."""


def check_store_readable(settings: Settings) -> None:
    """Refuse to start on a store whose events the configured key cannot read: encrypted with
    another key, encrypted while no key is set, or stored in the clear while one is. Serving
    would accept deliveries and then fail every read of their prescriptions. A store that is
    not there, or not migrated, is `StoreNotReadyError` first (and is not made here)."""
    check_ready(settings)
    app = open_prescriptions(settings)
    try:
        first = app.recorder.select_notifications(start=1, limit=1)
        if first:
            app.mapper.to_domain_event(first[0])
    except Exception as exc:
        if isinstance(exc, PersistenceError):
            raise  # the store itself failed, not the key
        raise StoreKeyError(
            "the event store's first event cannot be read "
            + (
                "with DRX_ENCRYPTION_KEY: the key is not the one the store was written with, "
                "or the store was written without encryption"
                if settings.encryption_key
                else "without DRX_ENCRYPTION_KEY: the store was written with encryption"
            )
        ) from None
    finally:
        app.close()


def open_prescriptions(settings: Settings) -> Prescriptions:
    """The application over the configured store. Keep a reference: when it is collected,
    its connection pool closes."""
    return Prescriptions(env=eventsourcing_env(settings))
