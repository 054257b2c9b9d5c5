"""What hostile connections cost the service: `/health` latency and the memory of all its
processes, at rest and while 200 slow connections (a head trickling in, a byte a second, or
nothing at all) and 4 connections streaming a 100 MiB header without ending it keep coming
back, each reconnecting as soon as it is closed.

    python bench/connections.py [--seconds 20]

It runs `drx serve` on a SQLite store in a temporary directory, and prints each figure beside
its bound (/health under 50 ms, memory growth under 50 MB), measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ServeProcess, descendants, machine, memory_of
from bench.pgcluster import free_port

HEALTH_BOUND_MS = 50.0
GROWTH_BOUND_MB = 50.0


def rss_mb(pid: int) -> float:
    """The service's resident memory: the process and all below it, in MiB."""
    return memory_of([pid, *descendants(pid)])[0]


def probe(port: int, seconds: float, pid: int) -> tuple[list[float], list[float]]:
    """/health latencies (ms) every 50 ms, and the service's memory (MB) every half second."""
    latencies, memory = [], []
    deadline, next_memory = time.monotonic() + seconds, 0.0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.close()
        latencies.append((time.perf_counter() - started) * 1000)
        if time.monotonic() >= next_memory:
            memory.append(rss_mb(pid))
            next_memory = time.monotonic() + 0.5
        time.sleep(0.05)
    return latencies, memory


def slow_client(port: int, stop: threading.Event, silent: bool) -> None:
    """A head trickling in a byte a second, or (`silent`) nothing at all after connecting; a
    new connection as soon as the service closes this one."""
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(1.0)
            if not silent:
                sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            while not stop.is_set():
                if not silent:
                    sock.sendall(b"x")
                try:
                    if sock.recv(1) == b"":
                        break  # closed by the service
                except TimeoutError:
                    continue
        time.sleep(0.05)


def big_head_client(port: int, stop: threading.Event, refused: list[int]) -> None:
    chunk = b"a" * (1024 * 1024)
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: ")
            for _ in range(100):  # 100 MiB, if the server kept reading
                sock.sendall(chunk)
        refused.append(1)
        time.sleep(0.01)


def attack(port: int, seconds: float, counts: dict[str, int]) -> None:
    """In a process of its own, so that the probe's client shares no interpreter with it."""
    stop, refused = threading.Event(), []
    threads = [
        threading.Thread(target=slow_client, args=(port, stop, n % 2 == 1), daemon=True)
        for n in range(200)
    ]
    threads += [
        threading.Thread(target=big_head_client, args=(port, stop, refused), daemon=True)
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    counts["oversized heads refused"] = len(refused)


def summary(name: str, latencies: list[float], memory: list[float]) -> str:
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"{name:<34} /health p50 {cut[49]:5.1f} ms  p99 {cut[98]:5.1f} ms  max"
        f" {max(latencies):6.1f} ms   memory {min(memory):6.1f}-{max(memory):6.1f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        server = ServeProcess({"DRX_DATABASE_URL": f"sqlite:///{folder}/drx.sqlite3"}, port)
        server.start()
        try:
            assert server.process is not None
            pid = server.process.pid
            time.sleep(2)
            rest_latency, rest_memory = probe(port, 5, pid)
            with multiprocessing.Manager() as manager:
                counts = manager.dict()
                attacker = multiprocessing.Process(target=attack, args=(port, args.seconds, counts))
                attacker.start()
                time.sleep(1)
                attacked_latency, attacked_memory = probe(port, args.seconds - 2, pid)
                attacker.join()
                refused = counts.get("oversized heads refused", 0)
        finally:
            server.kill()
    growth = max(attacked_memory) - statistics.median(rest_memory)
    worst = max(attacked_latency)
    print(summary("at rest", rest_latency, rest_memory))
    print(summary("200 slow + 4 oversized heads", attacked_latency, attacked_memory))
    print(f"oversized heads refused (each 431, then a new connection): {refused}")
    print(
        f"/health under attack, slowest: {worst:.1f} ms (bound {HEALTH_BOUND_MS:.0f} ms); "
        f"memory growth: {growth:.1f} MB (bound {GROWTH_BOUND_MB:.0f} MB); "
        f"{os.cpu_count()} cores shared by the service and the attackers"
    )
    return 0 if worst < HEALTH_BOUND_MS and growth < GROWTH_BOUND_MB else 1


if __name__ == "__main__":
    sys.exit(main())
