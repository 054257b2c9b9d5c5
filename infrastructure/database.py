"""The configured database and the ways to it: where it is (and whether a SQLite store is
there), plain connections for migrations and health checks, and the read database (one small
interface over SQLite and PostgreSQL, pooled on PostgreSQL) that the read models and their
queries use. Its SQL is written once with `%s` placeholders; the SQLite side rewrites them to
`?`. Beside it, for the read API's busiest queries, the same read database awaited on a web
worker's event loop (`AsyncReadDatabase`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
import psycopg_pool

from infrastructure.pg_arrays import columns
from infrastructure.settings import Settings

# How long a pool keeps trying to replace one lost connection before it gives the slot up, to
# be tried afresh by the next request that waits. psycopg_pool's default, 5 minutes, with a
# back-off that doubles from 1 s without a cap, left a pool whose connections died in a long
# outage waiting up to a minute before its next attempt once the database was back.
RECONNECT_TIMEOUT_S = 2.0

# Every connection's bound on a network that drops it silently (a half-open connection, as a
# failed-over server or a NAT's lost state leaves): a call on it fails within 10-15 s
# (unacknowledged data: tcp_user_timeout; waiting for an answer: the client's keepalives;
# Linux) instead of hanging for the kernel's TCP retries (15 minutes and more), which would
# hold the group committer, and every delivery waiting on it, for as long. A long query is not
# cut: a live server's kernel answers the probes.
HALF_OPEN_BOUND: dict[str, str | int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def tune_pool(
    pool: psycopg_pool.ConnectionPool[Any] | psycopg_pool.AsyncConnectionPool[Any],
    connect_timeout_s: float,
) -> None:
    """Make a pool recover within seconds of the database coming back: short reconnection
    attempts, a connect timeout for each (an unreachable host, not only a refused port, fails
    the attempt instead of hanging for the kernel's TCP timeout), and `HALF_OPEN_BOUND` on each
    connection (the library's pool is made from keywords, not from `postgres_conninfo`). Called
    before the pool opens: its connections are made with these. (A pool whose keywords are a
    callable is left as it is: none here is.)"""
    pool.reconnect_timeout = RECONNECT_TIMEOUT_S
    if pool.kwargs is None:  # a pool given none holds None, not a dict
        pool.kwargs = {}
    if isinstance(pool.kwargs, dict):
        pool.kwargs.setdefault("connect_timeout", max(1, round(connect_timeout_s)))
        for name, value in HALF_OPEN_BOUND.items():
            pool.kwargs.setdefault(name, value)


class StoreNotReadyError(RuntimeError):
    """The configured store is not there, cannot be reached, or is not migrated; the message
    says which, and what to do."""


def postgres_conninfo(settings: Settings) -> str:
    pg = settings.postgres
    return psycopg.conninfo.make_conninfo(
        "",
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password or None,
        dbname=pg.dbname,
        connect_timeout=settings.postgres_connect_timeout_s,
        application_name="drx",
        **HALF_OPEN_BOUND,  # every connection made from it (the LISTEN one, migrations, ...)
    )


@contextmanager
def connect_postgres(settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection whose unqualified names resolve in the configured schema;
    `StoreNotReadyError` naming why when the server cannot be reached or refuses us."""
    try:
        conn = psycopg.connect(postgres_conninfo(settings), autocommit=True)
    except psycopg.OperationalError as error:
        lines = str(error).strip().splitlines()
        raise StoreNotReadyError(
            f"{settings.describe_database()} cannot be reached: "
            + (lines[0].strip() if lines else "no answer")
        ) from None
    with conn:
        conn.execute(f'SET search_path TO "{settings.postgres_schema}"')
        yield conn


PRIVATE = 0o600


def create_private(path: Path) -> None:
    """Create the file readable and writable by its owner only, unless it exists. SQLite gives
    the database's WAL and shared-memory files the database file's permissions, so creating the
    database this way keeps all three private (they hold patient data)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))


@contextmanager
def connect_sqlite(settings: Settings, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A plain connection to the SQLite store; `create` makes the file (never its directory:
    a mistyped path is an error, not a new tree of folders)."""
    path = Path(settings.sqlite_path)
    if create:
        if not path.parent.is_dir():
            raise StoreNotReadyError(
                f"the directory {path.parent.resolve()} of the SQLite store does not exist: "
                "create it, or fix DRX_DATABASE_URL"
            )
        create_private(path)
    elif not path.is_file():
        raise StoreNotReadyError(
            f"there is no store at {path.resolve()}: run `drx migrate` (or `drx serve`) where "
            "the store should be, or point DRX_DATABASE_URL at it"
        )
    conn = sqlite3.connect(
        settings.sqlite_path, isolation_level=None, timeout=settings.sqlite_lock_timeout_s
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        yield conn
    finally:
        conn.close()


def postgres_warnings(settings: Settings) -> list[str]:
    """Server settings that hurt this service, each as a sentence for the log."""
    if settings.dialect != "postgresql":
        return []
    with connect_postgres(settings) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    if row is not None and row[0] == "off":
        return [
            "PostgreSQL runs with autovacuum off: without ANALYZE the planner has no statistics "
            "and each lookup by id scans the whole events table as the store grows (measured: "
            "118 deliveries/s at a million facts instead of 900); run VACUUM ANALYZE regularly"
        ]
    return []


Row = tuple[Any, ...]


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Row]: ...
    def fetchone(self) -> Row | None: ...

    @property
    def rowcount(self) -> int: ...


def insert_rows(
    cursor: Cursor,
    dialect: str,
    head: str,
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    tail: str = "",
) -> None:
    """`head` (an `INSERT INTO t (columns)`) for every row, then `tail` (an `ON CONFLICT`): on
    PostgreSQL as one statement, the rows as one array literal per column of the given SQL
    `types` (`infrastructure/pg_arrays.py`), where executemany would run a statement per row;
    on SQLite by executemany, which is a loop in C there."""
    if not rows:
        return
    if dialect == "postgresql":
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        cursor.execute(f"{head} SELECT * FROM unnest({arrays}) {tail}", columns(rows))  # noqa: S608 (code constants)
    else:
        marks = ", ".join(["%s"] * len(types))
        cursor.executemany(f"{head} VALUES ({marks}) {tail}", rows)


def in_list(dialect: str, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`column` is one of `values`: the clause and its parameters (one array on PostgreSQL)."""
    if dialect == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


class ReadDatabase(Protocol):
    dialect: str

    def transaction(self, durable: bool = True) -> Any:
        """A context manager yielding a Cursor; commits on success, rolls back on error.

        `durable=False` (PostgreSQL) answers the commit before its WAL is flushed: a crash may
        lose the last such commits, never half of one. For projections, whose rows and position
        commit together and are only done again, that costs nothing, and it keeps their commits
        from queueing with the webhook's for the disk."""

    def query(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> list[Row]:
        """The rows; `prepare=False` has PostgreSQL plan it for its values, never from a
        generic plan of a prepared statement (`infrastructure.queries.Statement`)."""
        ...

    def close(self) -> None: ...


class _SqliteCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(sql.replace("%s", "?"), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(sql.replace("%s", "?"), params)

    def fetchall(self) -> list[Row]:
        return list(self._cursor.fetchall())

    def fetchone(self) -> Row | None:
        row: Row | None = self._cursor.fetchone()
        return row

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class SqliteReadDatabase:
    """One connection per thread; writes take the database lock at BEGIN IMMEDIATE."""

    dialect = "sqlite"

    def __init__(self, settings: Settings) -> None:
        self._path = settings.sqlite_path
        self._timeout = settings.sqlite_lock_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, isolation_level=None, timeout=self._timeout, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Cursor]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SqliteCursor(conn.cursor())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> list[Row]:
        return list(self._connection().execute(sql.replace("%s", "?"), params).fetchall())

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()


class PostgresReadDatabase:
    """A small pool of its own, apart from the event store's, with the configured schema."""

    dialect = "postgresql"

    def __init__(self, settings: Settings, pool_size: int = 2) -> None:
        schema = settings.postgres_schema

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.commit()

        self._pool = psycopg_pool.ConnectionPool(
            postgres_conninfo(settings),
            min_size=1,
            max_size=pool_size + settings.postgres_max_overflow,
            configure=configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=settings.postgres_connect_timeout_s,
            open=False,
            name="drx-read",
        )
        tune_pool(self._pool, settings.postgres_connect_timeout_s)
        self._pool.open(wait=False)

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            if not durable:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            yield cursor

    def query(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> list[Row]:
        with self._pool.connection() as conn:
            return list(conn.execute(sql, params, prepare=prepare).fetchall())

    def close(self) -> None:
        self._pool.close()


def open_read_database(settings: Settings) -> SqliteReadDatabase | PostgresReadDatabase:
    if settings.dialect == "postgresql":
        return PostgresReadDatabase(settings, pool_size=settings.postgres_pool_size)
    return SqliteReadDatabase(settings)


class AsyncReadDatabase(Protocol):
    """Queries awaited on an event loop; `start` (in that loop) before the first, `stop` after
    the last. An ASGI host may run an app's lifespan more than once, each time in another
    loop (test clients do): each `start` opens it anew."""

    dialect: str

    @property
    def started(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def query(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> list[Row]: ...


class PostgresAsyncReadDatabase:
    """A pool of asyncio connections of its own, beside the threads' (`PostgresReadDatabase`).

    Its connections are in autocommit, so that a query is one round trip (in a transaction,
    psycopg sends a BEGIN first and the pool a ROLLBACK after), and they are not checked before
    each use, as the threads' pool does (one round trip more): one that broke while idle fails
    its query (an `OperationalError`), and the pool replaces it when it comes back. The caller
    answers that request by its other way, through the threads' pool
    (`interfaces/http/fast_reads.py`). So a query also waits at most `WAIT_S` for a connection:
    while the database is away, the other way's wait (the connect timeout) makes the 503."""

    dialect = "postgresql"
    WAIT_S = 1.0

    def __init__(self, settings: Settings, pool_size: int = 2) -> None:
        self._settings, self._pool_size = settings, pool_size
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    async def start(self) -> None:
        if self._pool is not None:
            return
        schema = self._settings.postgres_schema

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(f'SET search_path TO "{schema}"')

        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            postgres_conninfo(self._settings),
            min_size=1,
            max_size=self._pool_size + self._settings.postgres_max_overflow,
            kwargs={"autocommit": True},
            configure=configure,
            timeout=min(self.WAIT_S, self._settings.postgres_connect_timeout_s),
            open=False,
            name="drx-read-async",
        )
        tune_pool(pool, self._settings.postgres_connect_timeout_s)
        await pool.open(wait=False)
        self._pool = pool

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def query(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> list[Row]:
        if self._pool is None:
            raise StoreNotReadyError("the asynchronous read database is not started")
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params, prepare=prepare)
            rows: list[Row] = await cursor.fetchall()
            return rows


class SqliteAsyncReadDatabase:
    """On SQLite, the threads' read database, in a worker thread: a query that waits for the
    file's lock keeps the thread waiting, not the loop."""

    dialect = "sqlite"
    started = True

    def __init__(self, db: SqliteReadDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def query(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> list[Row]:
        return await asyncio.to_thread(self._db.query, sql, params)


def open_async_read_database(
    settings: Settings, threads: ReadDatabase
) -> PostgresAsyncReadDatabase | SqliteAsyncReadDatabase:
    """The read database awaited on an event loop, beside `threads` (`open_read_database`)."""
    if settings.dialect == "postgresql":
        return PostgresAsyncReadDatabase(settings, pool_size=settings.postgres_pool_size)
    assert isinstance(threads, SqliteReadDatabase)
    return SqliteAsyncReadDatabase(threads)
