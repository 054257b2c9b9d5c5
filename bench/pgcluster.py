"""A private PostgreSQL cluster on a free port, started with initdb and pg_ctl, for the fault
scripts and the fault tests: stopping, killing or restarting it disturbs no other user of the
machine's own server.

PostgreSQL refuses to run as root; as root, its programs run as the `postgres` user (runuser),
and the cluster lives in a directory that user owns. The programs are found on PATH, else in
the newest /usr/lib/postgresql/*/bin.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg


class ClusterError(RuntimeError):
    """The private cluster could not be made or started; the message says why."""


def _program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise ClusterError(f"{name} not found: install PostgreSQL's server programs")
    return candidates[-1]


def available() -> bool:
    """Whether initdb and pg_ctl can be found (and, as root, a postgres user to run them)."""
    try:
        _program("initdb")
        _program("pg_ctl")
    except ClusterError:
        return False
    if os.geteuid() == 0:
        return shutil.which("runuser") is not None and _postgres_ids() is not None
    return True


def _postgres_ids() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """One cluster: `start()`, `stop(mode)`, `kill()`, `url(dbname)`; `remove()` at the end."""

    def __init__(self, port: int | None = None, settings: dict[str, str] | None = None) -> None:
        """`settings` are added to (and override) the test cluster's postgresql.conf below."""
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="drx-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            ids = _postgres_ids()
            if ids is None:
                raise ClusterError("running as root, and there is no postgres user to run as")
            os.chown(self.root, *ids)
        self._run(
            _program("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        conf_settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",  # a test cluster: a crash of the machine may lose it whole
            "max_connections": "100",
            "shared_buffers": "32MB",
            "autovacuum": "on",
            **(settings or {}),
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in conf_settings.items())

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else list(command)
        done = subprocess.run(full, capture_output=True, text=True, check=False, timeout=120)
        if check and done.returncode != 0:
            raise ClusterError(f"{Path(command[0]).name} failed: {done.stderr.strip()[-500:]}")
        return done

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout_s: float = 30) -> None:
        self._run(
            _program("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
        )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"not accepting connections after {timeout_s} s") from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """`fast` (disconnect everyone, clean shut-down) or `immediate` (as a crash)."""
        self._run(_program("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM each setting and reload the configuration."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def terminate_backends(self, dbname: str) -> int:
        """pg_terminate_backend on every other session of `dbname`: how many were ended."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        return int(row[0]) if row else 0

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster(settings: dict[str, str] | None = None) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(settings=settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
