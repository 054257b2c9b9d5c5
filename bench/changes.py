"""Change feed benchmark on PostgreSQL: how soon internal apps hear of a delivery, and what
listening costs the webhook, side by side in one run.

    python bench/changes.py [--workers 2] [--streams 100] [--subscriptions 10] [--seconds 20]

On one scratch database, one `drx serve --workers N`:
1. the webhook flat out (closed loop, 32 connections) with nobody listening;
2. the same with `--streams` Server-Sent Events clients on /changes/stream and
   `--subscriptions` subscriptions (each to an endpoint of its own) listening;
3. once they have caught up with that burst, signed deliveries at 300/s with them listening: for each delivery answered 202, the time
   from its answer to (a) each stream client and (b) each subscription endpoint receiving its
   prescription.changed, p50 and p99 over every (listener, delivery) pair;
4. the webhook flat out again with nobody listening (streams closed, subscriptions paused), so
   that the store's growth between runs does not pass for the listeners' cost.
Stream clients and endpoints run in two processes of their own (asyncio, raw sockets) on the
same 2 cores (their CPU during the flat-out run with listeners is printed beside the machine's:
in production they are other machines' work); the endpoints answer 200 without checking signatures (the tests do that). Times
are compared across processes on the system's monotonic clock (perf_counter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, machine_cpu_s, process_cpu_s, scratch_database
from bench.loadgen import LoadResult
from bench.webhook import KEY, PORT, SECRET, deliveries, load, server, wait_for_projections
from infrastructure.migrations import migrate
from infrastructure.settings import Settings

RECEIVER_PORT = PORT + 1
GOAL_P99_MS = 250
GOAL_SHARE = 0.8
_MARK = b'"event_id":"'
# The listeners stand in for internal apps on other machines, yet share these 2 cores: they
# take each change's event id with one regular expression per chunk, and nothing more.
_EVENT_IDS = re.compile(rb'"event_id":"([^"]+)"')


def _event_id(data: bytes) -> str | None:
    start = data.find(_MARK)
    if start < 0:
        return None
    start += len(_MARK)
    return data[start : data.index(b'"', start)].decode()


# The listeners, each in a process of its own


async def _stream(index: int, seen: dict[str, float], connected: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(
        b"GET /changes/stream?types=prescription.changed HTTP/1.1\r\nhost: bench\r\n"
        b"authorization: Bearer " + KEY.encode() + b"\r\naccept: text/event-stream\r\n\r\n"
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    connected()
    while True:  # chunked transfer: a size line, the chunk, CRLF
        size = int((await reader.readline()).strip() or b"0", 16)
        chunk = await reader.readexactly(size + 2)
        now = time.perf_counter()
        # A change's JSON holds its own event id first (a needs_review's anomaly may hold
        # another): only prescription.changed is streamed here, which holds one.
        for event_id in _EVENT_IDS.findall(chunk):
            seen.setdefault(event_id.decode(), now)


def _streams_process(count: int, out: Any, stop: Any) -> None:
    async def run() -> list[dict[str, float]]:
        # Streams cut off at the end are no failures of the run: no tracebacks for them.
        asyncio.get_running_loop().set_exception_handler(lambda *_: None)
        seen: list[dict[str, float]] = [{} for _ in range(count)]
        ready = asyncio.Event()
        up = [0]

        def connected() -> None:
            up[0] += 1
            if up[0] == count:
                ready.set()

        tasks = [asyncio.create_task(_stream(i, seen[i], connected)) for i in range(count)]
        if count:
            await ready.wait()
        out.send("ready")
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return seen

    out.send(asyncio.run(run()))


def _receiver_process(out: Any, stop: Any) -> None:
    seen: dict[str, dict[str, float]] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.perf_counter()
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1].decode()
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                event_id = _event_id(body)
                if event_id:
                    seen.setdefault(path, {}).setdefault(event_id, now)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda *_: None)
        listening = await asyncio.start_server(handle, "127.0.0.1", RECEIVER_PORT, backlog=128)
        out.send("ready")
        while not stop.is_set():
            await asyncio.sleep(0.1)
        listening.close()

    asyncio.run(run())
    out.send(seen)


class Listeners:
    def __init__(self, streams: int) -> None:
        context = multiprocessing.get_context("fork")
        self.stop = context.Event()
        self.receiver_pipe, sender = context.Pipe(duplex=False)
        self.receiver = context.Process(target=_receiver_process, args=(sender, self.stop))
        self.receiver.start()
        assert self.receiver_pipe.recv() == "ready"
        self.streams_pipe, sender = context.Pipe(duplex=False)
        self.streams = context.Process(target=_streams_process, args=(streams, sender, self.stop))
        self.streams.start()
        assert self.streams_pipe.recv() == "ready"

    def close(self) -> tuple[list[dict[str, float]], dict[str, dict[str, float]]]:
        self.stop.set()
        streams, received = self.streams_pipe.recv(), self.receiver_pipe.recv()
        self.streams.join()
        self.receiver.join()
        return streams, received


def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def wait_for_subscriptions(timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(s["lag"] == 0 for s in api("GET", "/subscriptions")):
            return
        time.sleep(0.2)
    raise RuntimeError("the subscriptions did not catch up")


def ms(samples_s: list[float], p: int) -> float:
    if len(samples_s) < 2:
        return float("nan")
    return statistics.quantiles(samples_s, n=100, method="inclusive")[p - 1] * 1000


def delays(
    bodies: list[bytes], steady: LoadResult, heard: list[dict[str, float]]
) -> tuple[list[float], int]:
    """Each (listener, delivery answered 202) pair's delay, and how many pairs never came."""
    answered = {
        json.loads(bodies[index])["id"]: at
        for index, status, at in steady.answered
        if status == 202
    }
    found, missing = [], 0
    for seen in heard:
        for event_id, at in answered.items():
            if event_id in seen:
                found.append(max(seen[event_id] - at, 0.0))
            else:
                missing += 1
    return found, missing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=8000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        migrate(Settings(database_url=url))
        env = {"DRX_DATABASE_URL": url, "DRX_API_KEYS": KEY, "DRX_WEBHOOK_SECRETS": SECRET}
        command = [sys.executable, "-m", "interfaces.cli", "serve", "--port", str(PORT)]
        with server([*command, "--workers", str(args.workers)], env):
            load(deliveries(2000, 1), 32, None)  # warm-up
            wait_for_projections()
            alone = load(deliveries(args.requests, 2), 32, None)
            print(f"flat out, nobody listening:     {alone.describe()}")
            wait_for_projections()

            made = [
                api("POST", "/subscriptions", {"url": f"http://127.0.0.1:{RECEIVER_PORT}/s{n}"})
                for n in range(args.subscriptions)
            ]
            listeners = Listeners(args.streams)
            harness = [listeners.receiver.pid, listeners.streams.pid]
            harness_s = sum(process_cpu_s(pid) for pid in harness if pid)
            busy_s = machine_cpu_s()[0]
            listened = load(deliveries(args.requests, 3), 32, None)
            harness_s = sum(process_cpu_s(pid) for pid in harness if pid) - harness_s
            busy_s = machine_cpu_s()[0] - busy_s
            print(f"flat out, with listeners:       {listened.describe()}")
            print(
                f"  the listeners' own two processes (stand-ins for apps on other machines) took "
                f"{harness_s:.1f} s of the machine's {busy_s:.1f} busy CPU seconds meanwhile "
                f"({harness_s / max(busy_s, 1e-9):.0%})"
            )
            started = time.monotonic()
            wait_for_projections()
            wait_for_subscriptions()
            print(
                "  the subscriptions caught up with that burst "
                f"{time.monotonic() - started:.1f} s after its last answer"
            )

            bodies = deliveries(300 * args.seconds, 4)
            steady = load(bodies, 32, 300)
            print(f"at 300/s, with listeners:       {steady.describe()}")
            wait_for_projections()
            wait_for_subscriptions()
            time.sleep(1.0)
            streams, received = listeners.close()
            for subscription in made:
                api("PATCH", f"/subscriptions/{subscription['id']}", {"state": "paused"})

            again = load(deliveries(args.requests, 5), 32, None)
            print(f"flat out, nobody listening:     {again.describe()}")

        to_streams, lost_streams = delays(bodies, steady, streams)
        to_hooks, lost_hooks = delays(
            bodies, steady, [received.get(f"/s{n}", {}) for n in range(args.subscriptions)]
        )
        without = (alone.rate + again.rate) / 2
        print()
        print(
            f"{args.workers} web workers; {args.streams} streams and {args.subscriptions} "
            "subscriptions listening"
        )
        print(f"{'':<44}{'p50 ms':>9}{'p99 ms':>9}{'pairs':>10}{'missing':>9}")
        for name, found, lost in (
            ("202 to a stream client", to_streams, lost_streams),
            ("202 to a subscription endpoint", to_hooks, lost_hooks),
        ):
            print(
                f"{name:<44}{ms(found, 50):>9.1f}{ms(found, 99):>9.1f}{len(found):>10,}{lost:>9,}"
            )
        print(f"  goal: p99 under {GOAL_P99_MS} ms")
        print(f"{'webhook flat out, nobody listening (mean)':<44}{without:>9,.0f}/s")
        print(
            f"{'webhook flat out, with listeners':<44}{listened.rate:>9,.0f}/s"
            f"  = {listened.rate / without:.0%} (goal: at least {GOAL_SHARE:.0%})"
        )


if __name__ == "__main__":
    main()
