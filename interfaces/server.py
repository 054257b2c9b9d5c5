"""`drx serve`: migrate, check, take the port, then hand over to the supervisor of the
service's processes; and the bounds on each connection that uvicorn leaves out.

Serving: pending migrations are applied, the store's key is checked against the stored events,
the port is taken (a port in use is refused before anything is said to be served), then this
process becomes the supervisor (`interfaces/supervisor.py`, by `exec`: it keeps no more memory
than the standard library's), which starts the web workers (`interfaces/web_worker.py`: uvicorn
with httptools and uvloop, the fastest pair measured here, each building its app from the
environment: `interfaces.http.asgi:app`), the projector's process and the dispatcher's
(`interfaces/projector_process.py`).

uvicorn's httptools protocol reads a request head of any size into memory (four connections
streaming a 100 MiB header took a server from 116 to 589 MB) and has no time limit for reading
a request: a client that sends one byte every few seconds, or nothing at all after connecting,
holds its connection forever. `BoundedHttpToolsProtocol` adds:
- a limit on the request head (request line and headers): past `MAX_HEAD_BYTES` the answer is
  431 and the connection is closed, before the rest is read;
- a deadline for reading a request, head and body: `REQUEST_READ_TIMEOUT_S` from its first
  byte (or from the connection's opening, for the first one); past it the connection is closed.
  Between requests, uvicorn's keep-alive timeout closes an idle connection as before.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infrastructure.database import postgres_warnings
from infrastructure.dev_credentials import with_credentials
from infrastructure.eventstore import check_store_readable
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces import supervisor

log = logging.getLogger("drx")
APP_FACTORY = "interfaces.http.asgi:app"

MAX_HEAD_BYTES = 64 * 1024
REQUEST_READ_TIMEOUT_S = 15.0
KEEP_ALIVE_TIMEOUT_S = 5.0

_TOO_LARGE = json.dumps(
    {
        "error": "headers_too_large",
        "detail": f"the request line and headers are over {MAX_HEAD_BYTES // 1024} KiB",
    }
).encode()


STREAM_PATH = "/changes/stream"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and a request read deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._reading_head = True
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def shutdown(self) -> None:
        """At the server's shutdown: a change stream never ends by itself, and uvicorn would
        wait for it forever (SIGTERM would never stop drx serve); it is closed now, and its
        EventSource reconnects, with Last-Event-ID, to a server that runs."""
        cycle = self.cycle
        streaming = cycle is not None and cycle.response_started and not cycle.response_complete
        if streaming and cycle.scope["path"] == STREAM_PATH:
            self.transport.close()
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading_head:
            super().data_received(data)
            return
        if self._read_deadline is None:  # the first byte of a request after an idle spell
            self._arm_deadline()
        budget = MAX_HEAD_BYTES - self._head_bytes
        if len(data) <= budget:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Only the head's budget goes to the parser: if the head does not end within it, the
        # rest is never read.
        self._head_bytes = MAX_HEAD_BYTES
        super().data_received(data[:budget])
        if self._reading_head and not self.transport.is_closing():
            self._refuse_head()
            return
        if not self.transport.is_closing():
            super().data_received(data[budget:])

    def on_message_begin(self) -> None:
        # A request that begins in the packet that ended the one before (pipelining) is given
        # its deadline here: `data_received` arms it only at the next packet, which a client
        # that stops halfway never sends. (The head's bytes are counted by `data_received`, from
        # the packet after the one where the last request ended: a pipelined head may reach
        # 64 KiB past the packet it began in, one read of at most 256 KiB, never more.)
        if self._read_deadline is None:
            self._arm_deadline()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm_deadline()
        self._reading_head, self._head_bytes = True, 0  # the next bytes are the next head
        super().on_message_complete()

    def _refuse_head(self) -> None:
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _TOO_LARGE
        )
        self.transport.close()

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._read_deadline = self.loop.call_later(REQUEST_READ_TIMEOUT_S, self._too_slow)

    def _disarm_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class PortInUseError(RuntimeError):
    """The port to serve on is taken (or cannot be bound); the message says which."""


def take_port(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is said to be served."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        why = (
            "is in use" if error.errno == errno.EADDRINUSE else f"cannot be used ({error.strerror})"
        )
        raise PortInUseError(f"{host}:{port} {why}: stop what runs there, or pass --port") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Migrate, check, take the port, then become the supervisor of the service's processes
    (`interfaces/supervisor.py`), which serves until stopped (Ctrl-C or SIGTERM)."""
    settings, notes = with_credentials(settings)
    for note in notes:
        log.warning(note)
    migrate(settings)  # logs each migration it applies
    check_store_readable(settings)
    for warning in postgres_warnings(settings):
        log.warning(warning)
    sock = take_port(host, port)
    metrics_directory()
    log.info(
        "serving on http://%s:%d with %d web worker(s), the store in %s",
        host,
        port,
        workers,
        settings.describe_database(),
    )
    logging.shutdown()  # flushed before this process's image is replaced
    replacement = supervisor.command(sock.fileno(), workers, host, port)
    os.execv(replacement[0], replacement)  # noqa: S606


METRICS_PREFIX = "drx-metrics-"
METRICS_LOCK = ".lock"


def metrics_directory() -> str:
    """A private directory where every web worker keeps its Prometheus figures, so that a scrape
    adds them all up (`interfaces/http/metrics.py`); set for the workers before any starts.

    The supervisor this process becomes (`exec`: same process, same open files) removes it when
    it stops, and holds an exclusive `flock` on a file in it for as long as it runs (the lock
    dies with the process, even killed outright; its children do not inherit it). So the next
    start removes the directories whose lock it can take: those of servers killed outright,
    never a running one's, whatever its PID namespace or host. Named after the pid for people."""
    _remove_abandoned_metrics()
    figures = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    held = os.open(os.path.join(figures, METRICS_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.set_inheritable(held, True)  # kept across the exec into the supervisor, never closed
    os.environ[supervisor.METRICS_DIR] = figures
    return figures


def _remove_abandoned_metrics() -> None:
    """Remove the metrics directories whose server is gone (see above); one without a lock
    file (an older version's, or not ours) is left alone. Never stops a start."""
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*"):
        try:
            found = path.lstat()
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
                continue
            lock = os.open(path / METRICS_LOCK, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:  # no lock file, or gone meanwhile
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its server runs
            continue
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(lock)


def server_options(host: str, port: int) -> dict[str, Any]:
    """The options every `uvicorn.run` of the service takes (`drx serve`, the benchmarks)."""
    return {
        "host": host,
        "port": port,
        "http": f"{__name__}:BoundedHttpToolsProtocol",
        "loop": "auto",  # uvloop where it is installed
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_S,
        "log_level": "info",
        # uvicorn's loggers reach the service's handler (interfaces/logs.py), not its own.
        "log_config": None,
        "server_header": False,
        # No access log: request lines carry query strings (a patient id, say) into the logs.
        "access_log": False,
    }
