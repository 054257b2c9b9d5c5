"""Read API benchmark on PostgreSQL: list and detail query rates and latency percentiles.

    python bench/read_api.py [--prescriptions 100000] [--seconds 15] [--clients 8]

Seeds a scratch database with synthetic prescriptions (straight into the event store), projects
them, starts `drx serve` on it, and drives it from client threads over keep-alive connections.
The clients share the machine with the server, so the figures are a floor for a bigger host.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import READ_KEY as KEY
from bench.common import ServeProcess, machine, percentiles, scratch_database, seeded_read_store


def drive(
    port: int,
    paths: list[str],
    seconds: float,
    clients: int,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[float]]:
    """GETs of `paths` (picked at random) from client threads; with the API key by default."""
    sent = headers if headers is not None else {"Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request("GET", rng.choice(paths), headers=sent)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prescriptions", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        _settings, env = seeded_read_store(url, args.prescriptions)
        port = 18765
        server = ServeProcess(env, port)
        server.start(timeout_s=120)
        try:
            rng = random.Random(2)
            ids = [f"drx_rx_bench_{rng.randrange(args.prescriptions):07d}" for _ in range(5000)]
            workloads = {
                "detail  GET /prescriptions/{id}": [f"/prescriptions/{i}" for i in ids],
                "list    GET /prescriptions?limit=50": ["/prescriptions?limit=50"],
                "list    ?status=shipped&limit=50": ["/prescriptions?status=shipped&limit=50"],
                "list    ?patient_id=...": [
                    f"/prescriptions?patient_id=drx_pt_{rng.randrange(20000):05d}"
                    for _ in range(2000)
                ],
                "list    ?pharmacy_ncpdp_id=...&limit=100": [
                    f"/prescriptions?pharmacy_ncpdp_id={rng.randrange(500):07d}&limit=100"
                    for _ in range(500)
                ],
            }
            # A cursor deep in the set: keyset pages cost the same wherever they start.
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request(
                "GET", "/prescriptions?limit=500", headers={"Authorization": f"Bearer {KEY}"}
            )
            cursor = json.loads(conn.getresponse().read())["next_cursor"]
            workloads["list    page after a cursor, limit=50"] = [
                f"/prescriptions?limit=50&cursor={cursor}"
            ]
            print(
                f"{args.clients} client threads, {args.seconds:.0f} s each, {args.prescriptions} prescriptions"
            )
            for name, paths in workloads.items():
                count, latencies = drive(port, paths, args.seconds, args.clients)
                print(f"{name:<44} {count / args.seconds:>8,.0f} req/s   {percentiles(latencies)}")
        finally:
            server.kill()


if __name__ == "__main__":
    main()
