"""The dispatcher's POST, alone: CPU per POST of `interfaces.endpoint.Endpoint` on asyncio's
own event loop beside uvloop's, alternately, against a local endpoint in another process that
answers 200 at once (10 connections, as 10 subscriptions).

    python bench/endpoint.py [--posts 2000] [--rounds 2]

At 300 changes a second and 10 subscriptions the dispatcher makes 3,000 POSTs a second: what
one costs its process is what this measures (process CPU time, so other load on the machine
changes the wall rate more than the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine
from bench.pgcluster import free_port
from interfaces.endpoint import Endpoint

BODY = b'{"type":"prescription.changed","timestamp":"2026-12-01T00:00:00Z","data":{"x":"%s"}}' % (
    b"y" * 900
)
HEADERS = {
    "content-type": "application/json",
    "webhook-id": "msg_bench",
    "webhook-timestamp": "1764547200",
    "webhook-signature": "v1,c2lnbmF0dXJl",
}
CONNECTIONS = 10


def serve(port: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


async def post_all(port: int, posts: int) -> None:
    async def one_connection() -> None:
        endpoint = Endpoint(f"http://127.0.0.1:{port}/changes", 10)
        for _ in range(posts):
            await endpoint.post(BODY, HEADERS)
        endpoint.close()

    await asyncio.gather(*(one_connection() for _ in range(CONNECTIONS)))


def measure(loop: str, port: int, posts: int) -> tuple[float, float]:
    """(CPU us per POST, POSTs per second) on `loop`."""
    cpu, wall = time.process_time(), time.perf_counter()
    run = uvloop.run if loop == "uvloop" else asyncio.run
    run(post_all(port, posts))
    total = posts * CONNECTIONS
    return (time.process_time() - cpu) / total * 1e6, total / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=2000, help="per connection and run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    port = free_port()
    endpoint = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    endpoint.start()
    time.sleep(1)
    figures: dict[str, list[float]] = {"asyncio": [], "uvloop": []}
    for loop in ["asyncio", "uvloop", "uvloop", "asyncio"] * args.rounds:
        cpu_us, rate = measure(loop, port, args.posts)
        figures[loop].append(cpu_us)
        print(f"  {loop:<8} {cpu_us:5.0f} us of CPU per POST, {rate:>8,.0f} POSTs/s")
    endpoint.terminate()
    mean = {loop: sum(values) / len(values) for loop, values in figures.items()}
    print(
        f"mean CPU per POST: asyncio {mean['asyncio']:.0f} us, uvloop {mean['uvloop']:.0f} us "
        f"({mean['uvloop'] / mean['asyncio']:.0%}); at 3,000 POSTs/s: "
        f"{mean['asyncio'] * 3000 / 1e6:.2f} and {mean['uvloop'] * 3000 / 1e6:.2f} of a core"
    )


if __name__ == "__main__":
    main()
