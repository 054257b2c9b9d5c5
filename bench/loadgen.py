"""A lean HTTP/1.1 load generator for the webhook benchmarks, run in its own process.

Requests are signed and encoded before the clock starts, so the generator spends its time on
sockets only (asyncio, keep-alive connections, no HTTP library): on 2 cores it must leave as
much as it can to the server and PostgreSQL it measures.

Two modes:
- closed loop (`rate=None`): each connection sends its next request as soon as the last one is
  answered; the figure is the sustained rate at that concurrency.
- open loop (`rate=R`): request i is due at start + i/R, whatever the answers; its latency is
  counted from when it was due, so a stalled server shows in the percentiles instead of slowing
  the sender down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from interfaces.drx.signature import sign


@dataclass
class LoadResult:
    sent: int = 0
    elapsed_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    due_s: list[float] = field(default_factory=list)  # each request's due time, from the start
    # (request index, status, perf_counter when answered): perf_counter is the system's
    # monotonic clock on Linux, so other processes' receipt times compare with it.
    answered: list[tuple[int, int, float]] = field(default_factory=list)
    errors: int = 0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, p: int) -> float:
        if len(self.latencies_s) < 2:
            return float("nan")
        cut = statistics.quantiles(self.latencies_s, n=100, method="inclusive")
        return cut[p - 1] * 1000

    def describe(self) -> str:
        refused = {s: n for s, n in sorted(self.statuses.items()) if not 200 <= s < 300}
        return (
            f"{self.ok:,} of {self.sent:,} answered 2xx in {self.elapsed_s:.1f} s: "
            f"{self.rate:,.0f}/s, p50 {self.percentile_ms(50):.1f} ms, "
            f"p99 {self.percentile_ms(99):.1f} ms"
            + (f"; refused {refused}" if refused else "")
            + (f"; connection errors {self.errors}" if self.errors else "")
        )

    def stalls(self, over_ms: float = 25.0, gap_s: float = 0.25) -> str:
        """The requests slower than `over_ms`, grouped into stalls (slow requests due within
        `gap_s` of each other): whether a tail is a few stalls or slowness throughout."""
        slow = sorted(
            (due, latency)
            for due, latency in zip(self.due_s, self.latencies_s, strict=True)
            if latency * 1000 > over_ms
        )
        if not slow:
            return f"none over {over_ms:.0f} ms"
        groups: list[list[tuple[float, float]]] = [[slow[0]]]
        for item in slow[1:]:
            if item[0] - groups[-1][-1][0] > gap_s:
                groups.append([])
            groups[-1].append(item)
        worst = sorted(groups, key=lambda g: -max(latency for _, latency in g))[:3]
        described = ", ".join(
            f"{len(g)} at {g[0][0]:.1f} s (max {max(lat for _, lat in g) * 1000:.0f} ms)"
            for g in worst
        )
        return f"{len(slow)} over {over_ms:.0f} ms in {len(groups)} stalls; worst: {described}"


def signed_requests(
    bodies: list[bytes], secret: str, path: str = "/webhooks/drx", host: str = "127.0.0.1"
) -> list[bytes]:
    """Whole HTTP requests, signed now (the receiver accepts them for 5 minutes)."""
    now = int(time.time())
    timestamp = str(now)
    requests = []
    for n, body in enumerate(bodies):
        message_id = f"msg_bench_{timestamp}_{n}"
        signature = sign(secret, message_id, now, body)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nwebhook-id: {message_id}\r\n"
            f"webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _drive(
    host: str, port: int, requests: list[bytes], connections: int, rate: float | None
) -> LoadResult:
    result, cursor = LoadResult(), iter(range(len(requests)))
    start = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in cursor:
                due = start + index / rate if rate else time.perf_counter()
                if rate and (pause := due - time.perf_counter()) > 0:
                    await asyncio.sleep(pause)
                if not rate:
                    due = time.perf_counter()
                writer.write(requests[index])
                try:
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.sent += 1
                result.statuses[status] += 1
                now = time.perf_counter()
                result.answered.append((index, status, now))
                result.latencies_s.append(now - due)
                result.due_s.append(due - start)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - start
    return result


def _child(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    rate: float | None,
    out: multiprocessing.connection.Connection,
) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional, faster when installed

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_drive(host, port, requests, connections, rate)))


def run_load(
    host: str, port: int, requests: list[bytes], connections: int, rate: float | None = None
) -> LoadResult:
    """Send every request once from a separate process; the tally when all are answered."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child, args=(host, port, requests, connections, rate, sender), daemon=True
    )
    process.start()
    result: LoadResult = receiver.recv()
    process.join()
    return result
