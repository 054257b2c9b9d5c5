"""A subscriber's endpoint for tests and benchmarks: a real HTTP server on a free port that
verifies every POST with the `standardwebhooks` library (never with the code under test), keeps
what it received in order, and answers as told (a status, a Retry-After, a delay)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Answer:
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0


@dataclass
class Received:
    webhook_id: str
    payload: dict[str, Any]
    at: float
    number: int = 0  # of the request, in arrival order


@dataclass
class Receiver:
    """`answer` decides each answer from the number of the request (0 first)."""

    secret: str = ""
    answer: Callable[[int], Answer] = field(default=lambda n: Answer())
    received: list[Received] = field(default_factory=list)  # verified and answered 2xx
    requests: int = 0
    refused_signatures: int = 0

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    number = receiver.requests
                    receiver.requests += 1
                told = receiver.answer(number)
                if told.delay_s:
                    time.sleep(told.delay_s)
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                except Exception:
                    with receiver._lock:
                        receiver.refused_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if 200 <= told.status < 300:
                    with receiver._lock:
                        receiver.received.append(
                            Received(self.headers["webhook-id"], payload, time.monotonic(), number)
                        )
                        receiver.received.sort(key=lambda r: r.number)  # arrival order
                self.send_response(told.status)
                if told.retry_after is not None:
                    self.send_header("Retry-After", told.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                with contextlib.suppress(OSError):  # the dispatcher gave up waiting
                    self.wfile.write(b"{}")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def positions(self) -> list[int]:
        with self._lock:
            return [r.payload["data"]["position"] for r in self.received]

    def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"received {len(self.received)} of {count} in {timeout_s} s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
