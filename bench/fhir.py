"""FHIR read rate on PostgreSQL: `GET /fhir/r4/MedicationRequest/{id}` beside
`GET /prescriptions/{id}`, the same prescriptions, in the same run, alternately.

    python bench/fhir.py [--prescriptions 100000] [--rounds 6] [--seconds 5] [--clients 8]

Seeds and serves as `bench/read_api.py` does (its driver, over keep-alive connections), warms
both paths up, then runs rounds of each path in turn, so that the machine's drift falls on both
alike. Goal: the FHIR read at no less than 80% of the JSON read's rate.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ServeProcess, machine, percentiles, scratch_database, seeded_read_store
from bench.read_api import drive
from interfaces.fhir.ids import medication_request_id

GOAL = 0.80


def load_average() -> str:
    return " ".join(f"{figure:.1f}" for figure in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prescriptions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        _settings, env = seeded_read_store(url, args.prescriptions)
        server = ServeProcess(env, 18766)
        server.start(timeout_s=120)
        try:
            rng = random.Random(2)
            ids = [f"drx_rx_bench_{rng.randrange(args.prescriptions):07d}" for _ in range(5000)]
            workloads = {
                "GET /prescriptions/{id}": [f"/prescriptions/{i}" for i in ids],
                "GET /fhir/r4/MedicationRequest/{id}": [
                    f"/fhir/r4/MedicationRequest/{medication_request_id(i)}" for i in ids
                ],
            }
            for paths in workloads.values():  # warm up: connections, caches, pages
                drive(server.port, paths, 2, args.clients)
            print(f"load average before: {load_average()}")
            counts = dict.fromkeys(workloads, 0)
            latencies: dict[str, list[float]] = {name: [] for name in workloads}
            for round_ in range(args.rounds):
                for name, paths in workloads.items():
                    count, samples = drive(server.port, paths, args.seconds, args.clients)
                    counts[name] += count
                    latencies[name] += samples
                    print(f"  round {round_ + 1} {name:<36} {count / args.seconds:>8,.0f} req/s")
            print(f"load average after: {load_average()}")
            print(
                f"{args.clients} client threads, {args.rounds} rounds of {args.seconds:.0f} s "
                f"per path, {args.prescriptions:,} prescriptions"
            )
            elapsed = args.rounds * args.seconds
            for name in workloads:
                rate = counts[name] / elapsed
                print(f"{name:<36} {rate:>8,.0f} req/s   {percentiles(latencies[name])}")
            json_rate, fhir_rate = (counts[name] / elapsed for name in workloads)
            share = fhir_rate / json_rate
            verdict = "met" if share >= GOAL else "MISSED"
            print(
                f"FHIR read at {share:.0%} of the JSON read's rate (goal >= {GOAL:.0%}): {verdict}"
            )
        finally:
            server.kill()


if __name__ == "__main__":
    main()
