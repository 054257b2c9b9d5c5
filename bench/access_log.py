"""What the PHI access log costs the read API, on PostgreSQL: list and detail rates with the log
beside the same server with it switched off, alternately (ABBA), in one run.

    python bench/access_log.py [--prescriptions 100000] [--seconds 10] [--clients 8] [--rounds 2]

"Without" is `drx serve` in a process whose AccessLog.append does nothing (the service has no
switch to turn its audit log off: bench/serve_without_access_log.py patches it). Both answer from the
same database; the goal is that each rate with the log is at least 90% of the rate without.
The entries the logged runs wrote are counted against the requests they answered.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ServeProcess, machine, percentiles, scratch_database, seeded_read_store
from bench.read_api import drive
from interfaces.bootstrap import bootstrap

GOAL = 0.90


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prescriptions", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        settings, env = seeded_read_store(url, args.prescriptions)
        rng = random.Random(2)
        ids = [f"drx_rx_bench_{rng.randrange(args.prescriptions):07d}" for _ in range(5000)]
        workloads = {
            "detail GET /prescriptions/{id}": [f"/prescriptions/{i}" for i in ids],
            "list   GET /prescriptions?limit=50": ["/prescriptions?limit=50"],
        }
        rates: dict[tuple[str, bool], list[float]] = {}
        answered_logged = 0
        order = [True, False, False, True] * args.rounds  # ABBA: drift cancels out
        port = 18766
        for logged in order:
            module = "interfaces.cli" if logged else "bench.serve_without_access_log"
            server = ServeProcess(env, port, module=module)
            server.start(timeout_s=120)
            try:
                for name, paths in workloads.items():
                    count, latencies = drive(port, paths, args.seconds, args.clients)
                    rates.setdefault((name, logged), []).append(count / args.seconds)
                    answered_logged += count if logged else 0
                    label = "with the log   " if logged else "without the log"
                    print(
                        f"  {label} {name:<36} {count / args.seconds:>7,.0f}/s  {percentiles(latencies)}",
                        flush=True,
                    )
            finally:
                server.stop()  # SIGTERM: the last entries are written before it ends
            port += 1
        with bootstrap(settings) as parts:
            written = int(parts.read_db.query("SELECT COUNT(*) FROM drx_access_log")[0][0])
        print(
            f"\n{args.clients} client threads, {args.seconds:.0f} s per run, {args.prescriptions:,} prescriptions, PostgreSQL"
        )
        for name in workloads:
            with_log = sum(rates[(name, True)]) / len(rates[(name, True)])
            without = sum(rates[(name, False)]) / len(rates[(name, False)])
            share = with_log / without
            verdict = "meets" if share >= GOAL else "MISSES"
            print(
                f"{name:<36} with {with_log:>7,.0f}/s  without {without:>7,.0f}/s  share {share:.0%}  (goal >= {GOAL:.0%}: {verdict})"
            )
        print(f"access-log entries written {written:,} for {answered_logged:,} logged answers")


if __name__ == "__main__":
    main()
