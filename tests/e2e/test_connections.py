"""Each connection's cost is bounded: an oversized request head is refused with a 431 before it
is read, and a request that is not read within its deadline (a slow or silent client) loses its
connection. On uvicorn with the service's protocol, in this process, so the deadline can be
shortened."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time

import pytest
import uvicorn

from infrastructure.migrations import migrate
from interfaces import server as bounded
from interfaces.http.app import create_app
from tests.conftest import sqlite_settings
from tests.helpers import body_of, load_example, signed_headers

DEADLINE_S = 0.5


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    settings = sqlite_settings(tmp_path_factory.mktemp("connections"))
    migrate(settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app, **{**bounded.server_options("127.0.0.1", 0), "log_level": "warning"}
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    yield srv.servers[0].sockets[0].getsockname()[1]
    srv.should_exit = True
    thread.join(timeout=10)
    app.state.parts.close()


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch):
    monkeypatch.setattr(bounded, "REQUEST_READ_TIMEOUT_S", DEADLINE_S)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def health(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        return read_answer(sock)


def test_a_head_over_64_kib_is_refused_with_431_before_the_rest_is_read(port):
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (80 * 1024))
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert closed_within(sock, 2)
    assert health(port).startswith(b"HTTP/1.1 200 ")


def test_a_head_over_64_kib_in_two_packets_is_refused_with_431(port):
    """The first packet counts: the head is limited from the request's first byte."""
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-a: " + b"a" * (40 * 1024))
        time.sleep(0.1)  # read as a packet of its own
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\r\nx-b: " + b"b" * (40 * 1024) + b"\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 431 ")


def test_a_large_signature_header_is_refused_as_a_431(port):
    with connect(port) as sock:
        signature = b"v1," + b"A" * (8 * 1024 * 1024)
        # Closed while the rest was still being sent: refused all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                b"POST /webhooks/drx HTTP/1.1\r\nhost: x\r\nwebhook-signature: " + signature
            )
        assert read_answer(sock).startswith(b"HTTP/1.1 431 ")


def test_a_body_arriving_with_its_head_is_not_counted_as_head(port):
    """The first read often holds the head and much of the body: only the head is limited."""
    payload = load_example("received")
    payload["data"]["notes"] = "n" * (500 * 1024)
    body = body_of(payload)
    headers = signed_headers(body, "whsec_" + "A" * 44)  # a secret the service does not know
    head = (
        "POST /webhooks/drx HTTP/1.1\r\nhost: x\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + f"content-length: {len(body)}\r\n\r\n"
    )
    with connect(port) as sock:
        sock.sendall(head.encode() + body)
        assert read_answer(sock).startswith(b"HTTP/1.1 401 ")


def test_a_head_that_trickles_in_loses_its_connection_after_the_deadline(port):
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        for _ in range(20):
            time.sleep(DEADLINE_S / 4)
            try:
                sock.sendall(b"x-a: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed or closed_within(sock, 1)
        assert time.monotonic() - started < DEADLINE_S * 4


def test_a_connection_that_sends_nothing_is_closed_after_the_deadline(port):
    with connect(port) as sock:
        assert closed_within(sock, DEADLINE_S * 4)


def test_a_body_that_trickles_in_loses_its_connection_after_the_deadline(port):
    with connect(port) as sock:
        sock.sendall(
            b"POST /webhooks/drx HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        assert closed_within(sock, DEADLINE_S * 4)


def test_a_keep_alive_connection_serves_requests_one_after_another(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b'{"status":"ok"}')
        time.sleep(DEADLINE_S * 1.5)  # idle between requests: the keep-alive timeout's to judge
    conn.close()


def test_a_pipelined_request_that_stops_halfway_loses_its_connection_after_the_deadline(port):
    """A whole request and the next one's head in one packet: the second gets a deadline too
    (armed when it begins, not at the next packet, which a silent client never sends)."""
    with connect(port) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
            b"POST /webhooks/drx HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
        assert closed_within(sock, DEADLINE_S * 4)


def test_a_pipelined_head_over_64_kib_is_refused_with_431(port):
    """A head that begins in the packet that ended a request is limited from the next packet
    on (interfaces/server.py: one read more at most)."""
    first = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    second = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (60 * 1024)
    answers = b""
    with connect(port) as sock:
        sock.sendall(first + second)
        time.sleep(0.1)  # the first packet read alone
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"a" * (70 * 1024))
        sock.settimeout(DEADLINE_S * 4)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answers += chunk
    assert answers.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 431 " in answers
