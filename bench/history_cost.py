"""A new fact's cost against the length of its prescription's history, end to end on PostgreSQL.

    python bench/history_cost.py [--prescriptions 200] [--rounds 20] [--late 50]

Each of `--prescriptions` prescriptions gets a received fact and then monthly fills (processing,
dispensed, shipped, delivered, with a growing fill number), one fact after another. Measured
twice on the same server settings, `drx serve --workers 2`:

- around the 10th fact: facts 10 to 10 + rounds - 1 of every prescription, signed deliveries
  over 32 connections, flat out (rate, and CPU per delivery: the service's processes', and the
  whole machine's, PostgreSQL and the load generator included), then one more fact each over
  one connection (latency);
- around the 1,000th: the facts in between are taken in through the service's own intake
  (`Intake.take_batch`, the webhook's path without HTTP) while the server is stopped, projected
  and sealed, then the same measurements on facts 1,000 onwards;
- then `--late` facts that order between the last two facts of their prescription, and as many
  that order before most of its facts (DRx's deliveries are unordered): their rate, and each
  state checked against `derive_state` of all its facts.

Goal (issue 18): the 1,000th fact costs no more than 1.5x the 10th: CPU per delivery (the
service's, the machine's) and p50 latency at 1,000 within 1.5x of those at 10, and the rate at
1,000 at least 1/1.5 of that at 10.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    READ_KEY,
    READ_SECRET,
    ServeProcess,
    descendants,
    machine,
    percentiles,
    project,
    scratch_database,
)
from bench.cpu_split import machine_cpu_s, process_cpu_s
from bench.loadgen import run_load, signed_requests
from domain.state import derive_state
from infrastructure.migrations import migrate
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


def take_in(settings: Settings, first: int, last: int, prescriptions: int) -> None:
    """Facts `first`..`last` of every prescription, through the service's intake, in batches
    of 100 deliveries (each a different prescription), round by round."""
    started, count = time.perf_counter(), 0
    headers = SignedHeaders("msg_seed", "1700000000", "v1,seed")
    with bootstrap(settings) as parts:
        intake = parts.intake
        batch: list[Any] = []
        for number in range(first, last + 1):
            for index in range(prescriptions):
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
    project(settings)
    with bootstrap(settings) as parts:
        parts.sealer.checkpoint()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def service_cpu_s(server: ServeProcess) -> float:
    """CPU seconds used so far by the service's processes (the supervisor and all below it)."""
    assert server.process is not None
    root = server.process.pid
    return sum(process_cpu_s(pid) for pid in [root, *descendants(root)])


def measure(
    env: dict[str, str], label: str, items: list[dict[str, Any]], one_by_one: list[dict[str, Any]]
) -> dict[str, float]:
    server = ServeProcess(env, PORT, "--workers", "2")
    server.start()
    try:
        time.sleep(2)  # the projector's and dispatcher's start
        requests = signed_requests([body(i) for i in items], READ_SECRET)
        cpu0, busy0 = service_cpu_s(server), machine_cpu_s()[0]
        flat = run_load("127.0.0.1", PORT, requests, 32)
        cpu = (service_cpu_s(server) - cpu0) / flat.ok * 1000
        busy = (machine_cpu_s()[0] - busy0) / flat.ok * 1000
        alone = signed_requests([body(i) for i in one_by_one], READ_SECRET)
        single = run_load("127.0.0.1", PORT, alone, 1) if alone else None
    finally:
        server.stop()
    latencies = sorted(single.latencies_s) if single else [float("nan")]
    p50 = latencies[len(latencies) // 2] * 1000
    print(
        f"  {label}: flat out {flat.rate:,.0f}/s ({flat.ok:,} answered {dict(flat.statuses)}), "
        f"CPU per delivery: the service's processes {cpu:.2f} ms, the machine {busy:.2f} ms"
        + (f"; one at a time {percentiles(single.latencies_s)}" if single else "")
    )
    return {"rate": flat.rate, "cpu": cpu, "busy": busy, "p50": p50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prescriptions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--late", type=int, default=50)
    parser.add_argument("--far", type=int, default=1000, help="the fact measured against the 10th")
    args = parser.parse_args()
    n, rounds, far = args.prescriptions, args.rounds, args.far
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(f"{n} prescriptions, {rounds} facts each measured flat out, then one more each alone")
    with scratch_database() as url:
        settings = Settings(database_url=url, webhook_secrets=(READ_SECRET,), api_keys=(READ_KEY,))
        migrate(settings)
        env = {
            "DRX_DATABASE_URL": url,
            "DRX_API_KEYS": READ_KEY,
            "DRX_WEBHOOK_SECRETS": READ_SECRET,
        }

        def phase(first: int) -> dict[str, float]:
            items = [payload(i, k) for k in range(first, first + rounds) for i in range(n)]
            alone = [payload(i, first + rounds) for i in range(n)]
            return measure(env, f"facts {first}-{first + rounds}", items, alone)

        take_in(settings, 1, 9, n)
        settle(settings)
        near = phase(10)
        take_in(settings, 11 + rounds, far - 1, n)
        settle(settings)
        away = phase(far)

        # Late facts (DRx's deliveries are unordered): first a few that order between the last
        # two facts of their prescription (after what its last snapshot folded), then a few
        # that order before most of its facts (a fill's "processing" delivered long after).
        last = far + rounds
        near_late = [payload(i, 4, hours=last - 0.5) for i in range(args.late)]
        far_late = [payload(i, 2 + 4 * (i % 5), hours=1.5 + 4 * (i % 5)) for i in range(args.late)]
        if args.late:
            measure(env, f"{args.late} facts late among the last two", near_late, [])
            measure(env, f"{args.late} facts late before most", far_late, [])
        checked = 0
        with bootstrap(settings) as parts:
            for i in range(min(args.late, n)):  # each had both kinds of late fact
                subject = f"drx_rx_hist_{i:05d}"
                facts = [r.fact for r in parts.prescriptions.history(subject)]
                assert parts.prescriptions.state(subject) == derive_state(subject, facts)
                checked += 1
        print(
            f"  states after the late facts equal to derive_state of all facts: {checked} of {checked}"
        )

    rate_share = away["rate"] / near["rate"]
    cpu_ratio = away["cpu"] / near["cpu"]
    busy_ratio = away["busy"] / near["busy"]
    p50_ratio = away["p50"] / near["p50"]
    print()
    print(f"fact {far} against fact 10 (goal: at most {GOAL}x the cost):")
    for name, value, met in (
        ("service CPU per delivery", cpu_ratio, cpu_ratio <= GOAL),
        ("machine CPU per delivery", busy_ratio, busy_ratio <= GOAL),
        ("p50 latency alone", p50_ratio, p50_ratio <= GOAL),
        ("1 / flat-out rate", 1 / rate_share, 1 / rate_share <= GOAL),
    ):
        print(f"  {name:26} {value:.2f}x  (goal <= {GOAL}x)  {'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
