"""The change stream (`GET /changes/stream`, Server-Sent Events) on real servers: what a stream
sends (after a disconnect and a resume, on every worker of every instance, through filters) is
exactly what `GET /changes` lists, each change once, in position order; where a stream starts;
what it refuses; and its heartbeat, on the app served in this process, where the heartbeat's
interval and the hub's poll can be shortened or lengthened.

Every stream is read by a thread of its own and every wait has a deadline, so that no test can
hang; a stream is disconnected by shutting its socket down, as a client that goes away does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn

from bench.common import descendants
from infrastructure.access_log import AccessFilter
from infrastructure.migrations import migrate
from interfaces.http import access
from interfaces.http.app import create_app
from tests.conftest import sqlite_settings
from tests.e2e.test_processes import Server, free_port, server_env
from tests.helpers import (
    AUTH,
    LIFECYCLES,
    body_of,
    load_example,
    load_lifecycle,
    new_secret,
    relabelled,
    signed_headers,
)

WAIT_S = 15.0  # the longest any one wait lasts
GRACE_S = 0.4  # how long a stream is watched after its last expected change, for any repeat
# The fixtures' requests were opened in 2025: under the default SLA (48 h) the overdue watch
# signals them about a second after their change is projected, so a change could come after a
# test had listed the feed. With an SLA of a century, none is signalled.
NO_OVERDUE = "36500d"
# Every URL here is plain http, but httpx builds a TLS context for each client it makes (20 ms)
# unless it is given one: this one, made once.
TLS = ssl.create_default_context()
CANCELLED = next(path for path in LIFECYCLES if path.stem == "cancelled-on-request")
STORES = pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
ON_POSTGRES = pytest.mark.parametrize(
    "store", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


# A client of the stream


@dataclass
class Block:
    """One message of an event stream as it came: its fields (a name may repeat) and its comment
    lines, up to the blank line that ends it."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    at: float = 0.0  # time.monotonic() when its end came

    @property
    def dispatches(self) -> bool:
        """Whether an EventSource dispatches an event for it: any data field does, even an empty
        one (the SSE spec: each data line adds its value and a line feed to the data buffer)."""
        return "data" in self.fields


@dataclass(frozen=True)
class Message:
    position: int  # its id
    event: str
    document: dict[str, Any]  # its data, parsed
    at: float  # time.monotonic() when it came


class EventStream:
    """`GET /changes/stream` read in a thread: the messages parsed as they come."""

    def __init__(self, base_url: str, query: str = "", headers: dict[str, str] | None = None):
        self.url = f"{base_url}/changes/stream{query}"
        self.blocks: list[Block] = []
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.body = b""
        self.error: BaseException | None = None
        self.ended = False
        self._changed = threading.Condition()
        self._socket: socket.socket | None = None
        self._closing = False
        self._thread = threading.Thread(
            target=self._read, args=({**AUTH, **(headers or {})},), daemon=True
        )
        self._thread.start()
        self.wait_until(lambda: self.status is not None, "an answer")

    def _read(self, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(5.0, read=WAIT_S), verify=TLS) as client,
                client.stream("GET", self.url, headers=headers) as response,
            ):
                network = response.extensions.get("network_stream")
                self._socket = network.get_extra_info("socket") if network else None
                if response.status_code != 200:
                    self.body = response.read()
                with self._changed:
                    self.status, self.headers = response.status_code, response.headers
                    self._changed.notify_all()
                if response.status_code == 200:
                    self._parse(response.iter_lines())
        except (httpx.HTTPError, OSError) as error:
            if not self._closing:
                self.error = error
        finally:
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def _parse(self, lines: Iterable[str]) -> None:
        block = Block()
        for line in lines:
            if line == "":  # the end of a message
                if block.fields or block.comments:
                    block.at = time.monotonic()
                    with self._changed:
                        self.blocks.append(block)
                        self._changed.notify_all()
                block = Block()
            elif line.startswith(":"):
                block.comments.append(line[1:].removeprefix(" "))
            else:
                name, _, value = line.partition(":")
                block.fields.setdefault(name, []).append(value.removeprefix(" "))

    @property
    def messages(self) -> list[Message]:
        """The changes it sent (the dispatched messages with an id), in the order they came."""
        with self._changed:
            blocks = list(self.blocks)
        return [
            Message(
                int(b.fields["id"][-1]),
                b.fields.get("event", ["message"])[-1],
                json.loads("\n".join(b.fields["data"])),
                b.at,
            )
            for b in blocks
            if b.dispatches and "id" in b.fields
        ]

    @property
    def positions(self) -> list[int]:
        return [m.position for m in self.messages]

    def heartbeats(self) -> list[Block]:
        with self._changed:
            return [b for b in self.blocks if "heartbeat" in b.comments]

    def wait_until(self, done: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
        with self._changed:
            self._changed.wait_for(lambda: done() or self.ended, timeout_s)
            if not done():
                raise AssertionError(
                    f"{self.url}: {what} not within {timeout_s} s (ended: {self.ended}, "
                    f"error: {self.error!r}, positions: {self.positions[-10:]})"
                )

    def wait_for_position(self, position: int) -> None:
        self.wait_until(lambda: self.positions[-1:] >= [position], f"position {position}")

    def arrival(self, position: int) -> float:
        """When the change at `position` came."""
        return next(m.at for m in self.messages if m.position == position)

    def close(self) -> None:
        """Go away mid-stream: the socket shut down under the reading thread."""
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        assert not self._thread.is_alive(), f"{self.url}: the reader did not stop"


@contextlib.contextmanager
def setting_up() -> Iterator[None]:
    """A failure of what merely sets the scene, told apart from a failure of what the test
    checks."""
    try:
        yield
    except AssertionError as error:
        pytest.fail(f"the scene was not set: {error}")


# The service from outside


def env_for(settings: Any, secret: str) -> dict[str, str]:
    """What a `drx serve` on `settings` runs with, no request ever overdue."""
    return server_env(settings, secret) | {"DRX_REQUEST_SLA": NO_OVERDUE}


def http(method: str, url: str, **options: Any) -> httpx.Response:
    with httpx.Client(verify=TLS, timeout=30) as client:
        return client.request(method, url, **options)


def deliver(url: str, payload: dict[str, Any], secret: str) -> int:
    body = body_of(payload)
    headers = signed_headers(body, secret)
    return http("POST", f"{url}/webhooks/drx", content=body, headers=headers).status_code


def deliver_all(urls: list[str], events: list[dict[str, Any]], secret: str) -> list[int]:
    """Each prescription's events in their order, the prescriptions side by side (a store's
    group commit takes them together), each prescription to one of `urls` in turn; the
    answers' statuses."""
    by_prescription: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_prescription[event["subject"]].append(event)

    def send(job: tuple[int, list[dict[str, Any]]]) -> list[int]:
        number, own = job
        return [deliver(urls[number % len(urls)], event, secret) for event in own]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [c for done in pool.map(send, enumerate(by_prescription.values())) for c in done]


def get_json(url: str) -> Any:
    response = http("GET", url, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def settle(url: str) -> None:
    """Wait until every projection has caught up with the store."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        projections = get_json(f"{url}/projections")
        if all(p["lag"] == 0 for p in projections):
            return
        time.sleep(0.05)
    raise AssertionError(f"projections still lag: {projections}")


def listed(url: str, *, after: int = 0, limit: int = 25, **where: str) -> list[dict[str, Any]]:
    """Every change `GET /changes` lists after `after` (with the filters), read as a consumer
    reads it: pages, each asked after the page before's next_after."""
    items: list[dict[str, Any]] = []
    while True:
        page = get_json(f"{url}/changes?{urlencode({'after': after, 'limit': limit, **where})}")
        items += page["items"]
        if len(page["items"]) < limit:  # the last page: it says the feed's head, or later
            assert page["next_after"] >= (items[-1]["position"] if items else after)
            return items
        assert page["next_after"] == page["items"][-1]["position"]
        after = page["next_after"]


def head_of(url: str) -> int:
    changes = listed(url)
    return changes[-1]["position"] if changes else 0


def assert_sent_exactly(messages: list[Message], expected: list[dict[str, Any]]) -> None:
    """The messages are the listed changes: the same positions, each once and in order, each
    message's event its change's type and its data the change."""
    assert [m.position for m in messages] == [c["position"] for c in expected]
    for message, change in zip(messages, expected, strict=True):
        assert (message.event, message.document) == (change["type"], change)


# What is delivered


def lifecycles(tag: str, patient: str | None = None) -> list[list[dict[str, Any]]]:
    """The four lifecycles, each for a prescription of its own (`tag`), optionally of another
    patient."""
    found = [relabelled(load_lifecycle(path), tag) for path in LIFECYCLES]
    if patient is not None:
        for events in found:
            for event in events:
                if "patient" in event.get("data", {}):
                    event["data"] = {
                        **event["data"],
                        "patient": {**event["data"]["patient"], "drx_patient_id": patient},
                    }
    return found


def oddities(tag: str) -> list[dict[str, Any]]:
    """After the cancelled lifecycle of `tag`: a fact after its terminal one (a
    prescription.needs_review beside its prescription.changed) and a delivery of a type the
    service does not know (a delivery.parked)."""
    events = relabelled(load_lifecycle(CANCELLED), tag)
    late = {**events[1], "id": f"evt_late_{tag}", "occurred_at": "2031-01-01T00:00:00Z"}
    unknown = {**events[0], "id": f"evt_unknown_{tag}", "type": "drx.prescription.teleported"}
    return [late, unknown]


def burst(tag: str) -> list[dict[str, Any]]:
    return [event for events in lifecycles(tag) for event in events] + oddities(tag)


def subject_of(path_stem: str, tag: str) -> str:
    path = next(p for p in LIFECYCLES if p.stem == path_stem)
    return f"{load_lifecycle(path)['subject']}_{tag}"


# Fixtures


@pytest.fixture
def launch(tmp_path) -> Iterator[Callable[..., Server]]:
    """`drx serve` processes, killed at the end."""
    started: list[Server] = []

    def start(env: dict[str, str], *args: str) -> Server:
        started.append(Server(env, tmp_path, *args))
        return started[-1]

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def streams() -> Iterator[Callable[..., EventStream]]:
    """Streams opened by a test, all closed at its end."""
    opened: list[EventStream] = []

    def open_stream(
        base_url: str, query: str = "", headers: dict[str, str] | None = None
    ) -> EventStream:
        opened.append(EventStream(base_url, query, headers))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


class InProcess:
    """The app of `create_app` served by uvicorn in a thread of this process (its projections
    in a thread too): its state can be set, which a `drx serve` does not allow."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = sqlite_settings(tmp_path, request_sla_s=36500 * 86400.0)
        migrate(self.settings)
        self.secret = self.settings.webhook_secrets[0]
        self.app = create_app(self.settings)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    @property
    def hub(self) -> Any:
        return self.app.state.parts.hub

    def deliver(self, payload: dict[str, Any]) -> int:
        return deliver(self.url, payload, self.secret)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.parts.close()


@pytest.fixture
def in_process(tmp_path) -> Iterator[InProcess]:
    served = InProcess(tmp_path)
    yield served
    served.stop()


def stream_holders(server: Server) -> Counter[int]:
    """How many established connections to the server's port each of its processes holds (from
    /proc: the socket inodes of each process's descriptors, and the kernel's TCP table)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                columns = line.split()
                local_port = int(columns[1].rsplit(":", 1)[1], 16)
                if local_port == server.port and columns[3] == "01":
                    established.add(columns[9])
    held: Counter[int] = Counter()
    for pid in descendants(server.process.pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = str(fd.readlink())
                    if target.startswith("socket:[") and target[8:-1] in established:
                        held[pid] += 1
    return held


# The tests


@STORES
def test_a_client_that_disconnects_and_resumes_with_last_event_id_misses_and_repeats_nothing(
    store, launch, streams
):
    secret = new_secret()
    server = launch(env_for(store, secret))
    while_away, after_resuming = burst("r1"), burst("r2")
    live: list[dict[str, Any]] = []
    codes: list[int] = []
    gone = threading.Event()

    def feed_live() -> None:  # one by one, until the client has gone, and a burst more
        for n in itertools.count():
            for event in burst(f"r0{n}"):
                live.append(event)
                codes.append(deliver(server.url, event, secret))
                time.sleep(0.02)
            if gone.is_set():
                return

    first = streams(server.url, "?after=0")
    feeder = threading.Thread(target=feed_live, daemon=True)
    feeder.start()
    first.wait_until(lambda: len(first.messages) >= 5, "five changes")
    first.close()  # gone while changes are still being made (and maybe sent)
    gone.set()
    feeder.join(3 * WAIT_S)
    assert not feeder.is_alive()
    codes += deliver_all([server.url], while_away, secret)
    seen = first.messages
    # An EventSource sends the last id it saw; the header wins over the query's after=0.
    second = streams(server.url, "?after=0", {"Last-Event-ID": str(seen[-1].position)})
    codes += deliver_all([server.url], after_resuming, secret)
    assert codes == [202] * (len(live) + len(while_away) + len(after_resuming))
    settle(server.url)
    expected = listed(server.url, limit=7)
    second.wait_for_position(expected[-1]["position"])
    time.sleep(GRACE_S)
    resumed = second.messages
    assert 5 <= len(seen) < len(expected)
    assert resumed
    assert resumed[0].position > seen[-1].position
    assert_sent_exactly(seen + resumed, expected)
    assert {c["type"] for c in expected} == {
        "prescription.changed",
        "prescription.needs_review",
        "delivery.parked",
    }


@ON_POSTGRES
def test_streams_on_each_worker_of_two_instances_each_get_every_change_after_they_connected(
    store, launch, streams
):
    """`drx serve --workers 2` and a second `drx serve` on the same schema (its projector on
    standby): every web worker hears the one projector's commits (LISTEN/NOTIFY)."""
    secret = new_secret()
    env = env_for(store, secret)
    workers = launch(env, "--workers", "2")
    other = launch(env)
    before = burst("p0")  # before any stream: none of them may send these
    assert deliver_all([workers.url], before, secret) == [202] * len(before)
    settle(workers.url)
    start = head_of(workers.url)
    opened = [streams(other.url) for _ in range(2)]
    on_workers: list[EventStream] = []
    # The kernel gives each connection to one of the workers: open until both hold a stream.
    while len(on_workers) < 4 or len(stream_holders(workers)) < 2:
        assert len(on_workers) < 16, f"one worker took every stream: {stream_holders(workers)}"
        on_workers.append(streams(workers.url))
    opened += on_workers
    time.sleep(0.5)  # each stream has started: from its worker's head
    events = burst("p1") + burst("p2")
    assert deliver_all([workers.url, other.url], events, secret) == [202] * len(events)
    # Then one at a time: each change reaches every stream well within a second of its 202,
    # so by the NOTIFY (the hubs' fallback poll is every 2 s, the heartbeat every 10 s).
    latencies = []
    for number, event in enumerate(relabelled(load_lifecycle(CANCELLED), "p3")[:4]):
        sent = time.monotonic()
        assert deliver((workers, other)[number % 2].url, event, secret) == 202
        settle(workers.url)
        position = head_of(workers.url)
        for stream in opened:
            stream.wait_for_position(position)
            latencies.append(stream.arrival(position) - sent)
    assert max(latencies) < 1.0, sorted(latencies)
    expected = listed(workers.url, after=start)
    assert expected
    assert expected[0]["position"] > start
    for stream in opened:
        stream.wait_for_position(expected[-1]["position"])
    time.sleep(GRACE_S)
    for stream in opened:
        assert_sent_exactly(stream.messages, expected)
    assert len(stream_holders(workers)) == 2  # still both workers' streams
    logs = workers.log.read_text() + other.log.read_text()
    assert logs.count("now runs the projections") == 1, logs


@STORES
def test_a_filtered_stream_gives_exactly_the_matching_subset_of_the_feed(store, launch, streams):
    secret = new_secret()
    server = launch(env_for(store, secret))
    tagged = lifecycles("f1", patient="drx_pt_F1")
    # Before the streams open (what they read from the database): all of f0, and the first half
    # of each f1 prescription; after (what their worker's buffer gives them): the rest.
    early = burst("f0") + [e for events in tagged for e in events[: len(events) // 2]]
    late = [e for events in tagged for e in events[len(events) // 2 :]] + oddities("f1")
    filters: list[dict[str, str]] = [
        {"types": "prescription.changed"},
        {"prescription_id": subject_of("mail-order-with-change", "f1")},
        {"patient_id": "drx_pt_F1"},
        {"types": "prescription.needs_review,delivery.parked"},
        {
            "prescription_id": subject_of("cancelled-on-request", "f1"),
            "types": "prescription.needs_review,prescription.changed",
        },
    ]

    def matches(change: dict[str, Any], where: dict[str, str]) -> bool:
        patient = ((change.get("state") or {}).get("patient") or {}).get("drx_patient_id")
        return (
            change["type"] in where.get("types", change["type"]).split(",")
            and change["prescription_id"] == where.get("prescription_id", change["prescription_id"])
            and patient == where.get("patient_id", patient)
        )

    assert deliver_all([server.url], early, secret) == [202] * len(early)
    settle(server.url)
    split = head_of(server.url)
    opened = [streams(server.url, "?" + urlencode({"after": 0, **where})) for where in filters]
    for stream, where in zip(opened, filters, strict=True):
        so_far = listed(server.url, **where)
        assert so_far, where
        stream.wait_for_position(so_far[-1]["position"])
    assert deliver_all([server.url], late, secret) == [202] * len(late)
    settle(server.url)
    everything = listed(server.url)
    for stream, where in zip(opened, filters, strict=True):
        expected = listed(server.url, **where)
        assert expected == [c for c in everything if matches(c, where)], where
        assert 0 < len(expected) < len(everything), where
        # Some were there before the stream opened, some came after.
        assert {c["position"] > split for c in expected} == {False, True}, where
        stream.wait_for_position(expected[-1]["position"])
    time.sleep(GRACE_S)
    for stream, where in zip(opened, filters, strict=True):
        assert_sent_exactly(stream.messages, listed(server.url, **where))


def test_a_stream_starts_from_now_and_refuses_a_bad_position_or_no_api_key(store, launch, streams):
    secret = new_secret()
    server = launch(env_for(store, secret))
    old = burst("n0")
    assert deliver_all([server.url], old, secret) == [202] * len(old)
    settle(server.url)
    before = head_of(server.url)
    assert before > 0
    now = streams(server.url)
    assert now.status == 200
    assert now.headers is not None
    assert now.headers["content-type"].startswith("text/event-stream")
    since = streams(server.url, f"?after={before}")  # the same start, given
    time.sleep(0.5)  # the streams have taken their start
    new = burst("n1")
    assert deliver_all([server.url], new, secret) == [202] * len(new)
    settle(server.url)
    expected = listed(server.url, after=before)
    now.wait_for_position(expected[-1]["position"])
    since.wait_for_position(expected[-1]["position"])
    time.sleep(GRACE_S)
    assert_sent_exactly(now.messages, expected)
    assert_sent_exactly(since.messages, expected)
    assert all(m.position > before for m in now.messages)

    def refusal(query: str, headers: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
        # A refusal is a JSON answer, not a stream (a stream would end only at the timeout).
        response = http("GET", f"{server.url}/changes/stream{query}", headers=headers, timeout=5)
        return response.status_code, response.headers["content-type"], response.json()

    status, kind, body = refusal("?after=abc", AUTH)
    assert (status, kind, body["error"]) == (400, "application/json", "invalid_parameter")
    assert [p["field"] for p in body["problems"]] == ["after"]
    for query in ("", "?after=0"):  # the header is read first
        status, kind, body = refusal(query, {**AUTH, "Last-Event-ID": "x"})
        assert (status, kind, body["error"]) == (400, "application/json", "invalid_parameter")
        assert "Last-Event-ID" in body["detail"]
    status, kind, body = refusal("?types=prescription.teleported", AUTH)
    assert (status, kind, body["error"]) == (400, "application/json", "invalid_parameter")
    # A position this feed never gave out (another database's; this one restored from an older
    # backup): a stream waiting there would skip every change the feed puts below it.
    head = expected[-1]["position"]
    for query, headers, named in (
        (f"?after={head + 1}", AUTH, "after"),
        ("?after=0", {**AUTH, "Last-Event-ID": str(head + 4)}, "Last-Event-ID"),
    ):
        status, kind, body = refusal(query, headers)
        assert (status, kind, body["error"]) == (409, "application/json", "position_past_head")
        assert body["detail"].startswith(f"{named} ")
        assert f"head ({head})" in body["detail"]
    at_head = streams(server.url, f"?after={head}")  # the head itself is where one waits
    assert at_head.status == 200
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        response = http("GET", f"{server.url}/changes/stream", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"


def test_an_idle_stream_sends_a_heartbeat_comment(in_process, streams):
    in_process.app.state.heartbeat_s = 0.3
    stream = streams(in_process.url)
    stream.wait_until(lambda: len(stream.heartbeats()) >= 4, "four heartbeats", timeout_s=5)
    beats = [b.at for b in stream.heartbeats()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
    assert all(0.2 < gap < 1.5 for gap in gaps), gaps
    assert stream.messages == []


def test_a_heartbeat_is_a_comment_alone_which_dispatches_no_event(in_process, streams):
    in_process.app.state.heartbeat_s = 0.2
    with setting_up():
        stream = streams(in_process.url)
        stream.wait_until(lambda: len(stream.heartbeats()) >= 2, "two heartbeats", timeout_s=5)
    beat = stream.heartbeats()[-1]
    assert (beat.comments, beat.fields) == (["heartbeat"], {})


def test_a_filtered_stream_sends_heartbeats_while_changes_it_filters_out_keep_coming(
    in_process, streams
):
    in_process.app.state.heartbeat_s = 0.4
    with setting_up():
        stream = streams(in_process.url, "?prescription_id=drx_rx_NOBODY")
        events = burst("h0")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and events:  # a change every 0.1 s, none of them its
            assert in_process.deliver(events.pop(0)) == 202
            time.sleep(0.1)
        assert stream.messages == []
    # Over 2 s, a heartbeat at least every 0.4 s: 4 or 5 of them.
    assert len(stream.heartbeats()) >= 3, [b.at for b in stream.heartbeats()]


def test_a_stream_from_further_back_than_the_buffer_repeats_none_the_hub_has_not_read_yet(
    in_process, streams
):
    hub = in_process.hub
    hub.poll_s = 1.0  # the hub reads the feed's head every second (SQLite's poll is 0.1 s)
    with setting_up():
        old = burst("d0")
        assert deliver_all([in_process.url], old, in_process.secret) == [202] * len(old)
        settle(in_process.url)
        known = head_of(in_process.url)
        streams(in_process.url)  # the first stream starts the hub: its buffer begins at `known`
        deadline = time.monotonic() + 5
        while hub.head != known:
            assert time.monotonic() < deadline, "the hub did not start"
            time.sleep(0.01)
        for event in relabelled(load_lifecycle(CANCELLED), "d1"):  # the hub has not read these
            assert in_process.deliver(event) == 202
        settle(in_process.url)
        expected = listed(in_process.url)
        behind = streams(in_process.url, "?after=0")  # before the buffer: from the database
        behind.wait_for_position(expected[-1]["position"])
        assert hub.head == known, "the hub read the new changes before the stream's query"
        deadline = time.monotonic() + 5
        while hub.head != expected[-1]["position"]:
            assert time.monotonic() < deadline, "the hub did not read the new changes"
            time.sleep(0.05)
        time.sleep(GRACE_S)
    assert_sent_exactly(behind.messages, expected)


def test_sigterm_stops_a_server_while_a_stream_is_open(store, launch, streams):
    with setting_up():
        server = launch(env_for(store, new_secret()), "--workers", "2")
        stream = streams(server.url)
        time.sleep(0.2)  # the stream is under way
    os.kill(server.process.pid, signal.SIGTERM)
    try:
        code = server.process.wait(timeout=4)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "drx serve still runs 4 s after SIGTERM: " + server.log.read_text()[-200:]
        ) from None
    assert code == 0
    stream.wait_until(lambda: stream.ended, "the stream's end", timeout_s=2)
    assert "Traceback" not in server.log.read_text()


def _stream_entries(in_process: InProcess) -> list[dict[str, Any]]:
    parts = in_process.app.state.parts
    parts.access_log.flush()
    return [
        entry
        for entry in parts.access.find(AccessFilter(), 100, None)[0]
        if entry["path"].startswith("/changes/stream")
    ]


def test_a_stream_is_one_access_holding_every_id_it_carried(in_process, streams, monkeypatch):
    """Its entry is written when it ends; while open for long, one every STREAM_ENTRY_S too."""
    in_process.app.state.heartbeat_s = 0.2  # the server sees the client gone at the next write
    for name in ("received", "shipped"):
        assert in_process.deliver(load_example(name)) == 202
    settle(in_process.url)
    monkeypatch.setattr(access, "STREAM_ENTRY_S", 0.5)
    stream = streams(in_process.url, "?after=0")
    stream.wait_until(lambda: len(stream.messages) >= 2, "the changes")
    deadline = time.monotonic() + WAIT_S
    while not _stream_entries(in_process):  # still open: its first entry comes after 0.5 s
        assert time.monotonic() < deadline, "no entry while the stream was open"
        time.sleep(0.1)
    interim = _stream_entries(in_process)
    assert [(e["prescription_ids"], e["patient_ids"]) for e in interim] == [
        (["drx_rx_7Q2M9K"], ["drx_pt_TEST01"])
    ]
    stream.close()
    while len(_stream_entries(in_process)) < 2:
        assert time.monotonic() < deadline, "no entry when the stream ended"
        time.sleep(0.1)
    last = _stream_entries(in_process)[-1]
    assert (last["key"], last["status"], last["path"]) == (
        "DRX_API_KEYS[1]",
        200,
        "/changes/stream?after=0",
    )
    assert last["prescription_ids"] == []  # nothing carried since the interim entry


@pytest.mark.parametrize("heartbeat_s", [0.2, None])  # None: the default, 10 s
def test_a_stream_ends_once_its_key_is_revoked(in_process, streams, heartbeat_s):
    """Within 5 s, as new requests are refused: an idle stream checks its key more often than
    it sends heartbeats (it waited for the next one, up to 10 s)."""
    if heartbeat_s is not None:
        in_process.app.state.heartbeat_s = heartbeat_s
    store = in_process.app.state.parts.key_store
    key = store.create("follower", ("read",))
    deadline = time.monotonic() + WAIT_S
    while True:  # the web process takes the new key up within a second
        stream = streams(in_process.url, "?after=0", {"Authorization": f"Bearer {key}"})
        if stream.status == 200:
            break
        assert time.monotonic() < deadline, "the new key was not accepted"
        time.sleep(0.2)
    store.revoke("follower")
    revoked = time.monotonic()
    stream.wait_until(lambda: stream.ended, "the stream's end after its key was revoked", 5)
    assert time.monotonic() - revoked < 5
    assert stream.error is None
