"""A new fact's cost against the length of its prescription's history, end to end on PostgreSQL.

    python bench/history_cost.py [--prescriptions 200] [--rounds 10] [--turns 4] [--late 50]

`--prescriptions` prescriptions get 999 facts each (a received fact, then monthly fills:
processing, dispensed, shipped, delivered, with a growing fill number), as many others 9, all
taken in through the service's own intake (`Intake.take_batch`, the webhook's path without
HTTP), projected, sealed and analyzed: one store for both. Then one `drx serve --workers 2`
takes, in turns alternated short-long-long-short, `--rounds` more facts of every prescription of
one kind (signed deliveries over 32 connections, flat out: the rate, and CPU per delivery: the
service's processes', and the whole machine's, PostgreSQL and the load generator included), then
one more fact each over one connection (its latency). The short ones' facts are the 10th on;
the long ones', the 1,000th on. So both are measured on the same store and server, and only the
length of the prescription's history differs.

Then `--late` facts that order between the last two facts of their prescription, and as many
that order before most of its facts (DRx's deliveries are unordered): their rate, and each
state checked against `derive_state` of all its facts.

Goal (issue 18): the 1,000th fact costs no more than 1.5x the 10th: CPU per delivery (the
service's, the machine's) and p50 latency at 1,000 within 1.5x of those at 10, and the rate at
1,000 at least 1/1.5 of that at 10 (medians of the turns).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    READ_SECRET,
    ServeProcess,
    descendants,
    machine,
    machine_cpu_s,
    migrated_store,
    percentiles,
    process_cpu_s,
    project,
    scratch_database,
)
from bench.loadgen import run_load, signed_requests
from domain.state import derive_state
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap
from interfaces.drx.signature import SignedHeaders
from interfaces.drx.translator import parse_envelope, translate

PORT = 18771
EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "examples"
START = datetime(2024, 1, 1, tzinfo=UTC)
FILL_STEPS = ("processing", "dispensed", "shipped", "delivered")
GOAL = 1.5


def example(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return found


TEMPLATES = {name: example(name) for name in ("received", *FILL_STEPS)}


def payload(index: int, number: int, *, hours: float | None = None) -> dict[str, Any]:
    """Fact `number` (1: received) of prescription `index`, `hours` after the start (by
    default `number` hours: each fact after the one before)."""
    subject = f"drx_rx_hist_{index:05d}"
    if number == 1:
        name, data = "received", copy.deepcopy(TEMPLATES["received"]["data"])
        data["medication"]["refills_authorized"] = 500
    else:
        name = FILL_STEPS[(number - 2) % 4]
        data = copy.deepcopy(TEMPLATES[name]["data"])
        data["fill_number"] = (number - 2) // 4 + 1
        if name == "dispensed":
            data["refills_remaining"] = max(0, 500 - data["fill_number"])
    at = (START + timedelta(hours=number if hours is None else hours)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    return {
        **TEMPLATES[name],
        "id": f"evt_hist_{index:05d}_{number:05d}" + ("_late" if hours is not None else ""),
        "subject": subject,
        "occurred_at": at,
        "sent_at": at,
        "correlation": {"prescription_id": subject},
        "data": data,
    }


def body(item: dict[str, Any]) -> bytes:
    return json.dumps(item).encode()


def take_in(settings: Settings, first: int, last: int, prescriptions: range) -> None:
    """Facts `first`..`last` of these prescriptions, through the service's intake, in batches
    of 100 deliveries (each a different prescription), round by round."""
    started, count = time.perf_counter(), 0
    headers = SignedHeaders("msg_seed", "1700000000", "v1,seed")
    with bootstrap(settings) as parts:
        intake = parts.intake
        batch: list[Any] = []
        for number in range(first, last + 1):
            for index in prescriptions:
                raw = body(payload(index, number))
                batch.append(translate(parse_envelope(raw), raw, headers))
                if len(batch) == 100:
                    intake.take_batch(batch)
                    count, batch = count + len(batch), []
        if batch:
            intake.take_batch(batch)
            count += len(batch)
    elapsed = time.perf_counter() - started
    print(
        f"  took in facts {first}-{last}: {count:,} in {elapsed:.0f} s ({count / elapsed:,.0f}/s)"
    )


def settle(settings: Settings) -> None:
    """The read models caught up, the store sealed (so that no server measured afterwards
    spends its turns on them) and analyzed (this machine runs no autovacuum; docs/operations.md
    asks for an ANALYZE after a bulk load)."""
    project(settings)  # and sealed
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def service_cpu_s(server: ServeProcess) -> float:
    """CPU seconds used so far by the service's processes (the supervisor and all below it)."""
    assert server.process is not None
    root = server.process.pid
    return sum(process_cpu_s(pid) for pid in [root, *descendants(root)])


def measure(
    server: ServeProcess,
    label: str,
    items: list[dict[str, Any]],
    one_by_one: list[dict[str, Any]],
) -> dict[str, float]:
    requests = signed_requests([body(i) for i in items], READ_SECRET)
    cpu0, busy0 = service_cpu_s(server), machine_cpu_s()[0]
    flat = run_load("127.0.0.1", PORT, requests, 32)
    cpu = (service_cpu_s(server) - cpu0) / flat.ok * 1000
    busy = (machine_cpu_s()[0] - busy0) / flat.ok * 1000
    alone = signed_requests([body(i) for i in one_by_one], READ_SECRET)
    single = run_load("127.0.0.1", PORT, alone, 1) if alone else None
    latencies = sorted(single.latencies_s) if single else [float("nan")]
    p50 = latencies[len(latencies) // 2] * 1000
    print(
        f"  {label}: flat out {flat.rate:,.0f}/s ({flat.ok:,} answered {dict(flat.statuses)}), "
        f"CPU per delivery: the service's processes {cpu:.2f} ms, the machine {busy:.2f} ms"
        + (f"; one at a time {percentiles(single.latencies_s)}" if single else "")
    )
    return {"rate": flat.rate, "cpu": cpu, "busy": busy, "p50": p50}


def median_of(results: list[dict[str, float]], name: str) -> float:
    return statistics.median(r[name] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prescriptions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="facts a prescription, a turn")
    parser.add_argument("--turns", type=int, default=4, help="turns of each, alternated")
    parser.add_argument("--late", type=int, default=50)
    parser.add_argument("--far", type=int, default=1000, help="the fact measured against the 10th")
    args = parser.parse_args()
    n, rounds, far, turns = args.prescriptions, args.rounds, args.far, args.turns
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(
        f"{n} prescriptions with {far - 1} facts and {n} with 9, in one store; then, alternated,"
        f" {turns} turns of {rounds} facts each of both, flat out, and one more each alone"
    )
    with scratch_database() as url:
        settings, env = migrated_store(url)
        long_ones, short_ones = range(n), range(n, 2 * n)
        take_in(settings, 1, far - 1, long_ones)
        take_in(settings, 1, 9, short_ones)
        settle(settings)
        next_fact = {"short": 10, "long": far}
        results: dict[str, list[dict[str, float]]] = {"short": [], "long": []}
        server = ServeProcess(env, PORT, "--workers", "2")
        server.start()
        try:
            time.sleep(2)  # the projector's and dispatcher's start
            for turn in range(turns):
                order = [("short", short_ones), ("long", long_ones)]
                for kind, indexes in order[::-1] if turn % 2 else order:  # short-long-long-short
                    first = next_fact[kind]
                    items = [payload(i, k) for k in range(first, first + rounds) for i in indexes]
                    alone = [payload(i, first + rounds) for i in indexes]
                    label = f"facts {first}-{first + rounds}"
                    results[kind].append(measure(server, label, items, alone))
                    next_fact[kind] = first + rounds + 1

            # Late facts (DRx's deliveries are unordered): first some that order between the
            # last two facts of their prescription (after what its last snapshot folded), then
            # some that order before most of its facts (a fill's "processing" long after).
            last = next_fact["long"] - 1
            near_late = [payload(i, 4, hours=last - 0.5) for i in range(args.late)]
            far_late = [
                payload(i, 2 + 4 * (i % 5), hours=1.5 + 4 * (i % 5)) for i in range(args.late)
            ]
            if args.late:
                measure(server, f"{args.late} facts late among the last two", near_late, [])
                measure(server, f"{args.late} facts late before most", far_late, [])
        finally:
            server.stop()
        checked = 0
        with bootstrap(settings) as parts:
            for i in range(min(args.late, n)):  # each had both kinds of late fact
                subject = f"drx_rx_hist_{i:05d}"
                facts = [r.fact for r in parts.prescriptions.history(subject)]
                assert parts.prescriptions.state(subject) == derive_state(subject, facts)
                checked += 1
        print(f"  states after the late facts equal to derive_state of all: {checked} of {checked}")

    near, away = results["short"], results["long"]
    print()
    print(f"fact {far} against fact 10, medians of {turns} turns (goal: at most {GOAL}x the cost):")
    for name, value in (
        ("service CPU per delivery", median_of(away, "cpu") / median_of(near, "cpu")),
        ("machine CPU per delivery", median_of(away, "busy") / median_of(near, "busy")),
        ("p50 latency alone", median_of(away, "p50") / median_of(near, "p50")),
        ("1 / flat-out rate", median_of(near, "rate") / median_of(away, "rate")),
    ):
        verdict = "met" if value <= GOAL else "NOT MET"
        print(f"  {name:26} {value:.2f}x  (goal <= {GOAL}x)  {verdict}")


if __name__ == "__main__":
    main()
