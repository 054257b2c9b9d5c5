"""Where the CPU goes per delivery, by process, with `drx serve` on PostgreSQL under load.

    python bench/cpu_split.py [--deliveries 20000] [--rate R] [--workers 2] [--repeat 1]
                              [--root ../other-checkout]

Starts `drx serve --workers N` on a scratch database, warms it up, sends signed deliveries of
simulated lifecycles (`bench/loadgen.py`: flat out, or at `--rate` per second), and prints the
rate and latency with each process's CPU time per delivery (from /proc): each web worker, the
projector, every PostgreSQL process together, the whole machine's busy time and the time the
hypervisor stole. `--root` serves another checkout of this project instead (say an older
commit, from `git worktree add`), so that two versions can be measured alternately, on the same
machine in the same hour: this VM's speed drifts by a third from one hour to the next.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    CpuMeter,
    activity,
    descendants,
    describe_activity,
    machine,
    scratch_database,
)
from bench.webhook import (
    KEY,
    PORT,
    SECRET,
    deliveries,
    load,
    migrate_with,
    server,
    wait_for_projections,
)


def measure(root: Path, workers: int, count: int, rate: float | None) -> str:
    with scratch_database() as url:
        env = {"DRX_DATABASE_URL": url, "DRX_API_KEYS": KEY, "DRX_WEBHOOK_SECRETS": SECRET}
        migrate_with(root, env)
        command = [sys.executable, "-m", "interfaces.cli", "serve", "--port", str(PORT)]
        with server([*command, "--workers", str(workers)], env, root) as process:
            load(deliveries(2000, 7), 64, None)
            wait_for_projections()
            bodies = deliveries(count, 8)
            cpu = CpuMeter(descendants(process.pid))
            counters, started = activity(url), time.monotonic()
            result = load(bodies, 64, rate)
            split = cpu.describe(result.ok)
            meanwhile = describe_activity(counters, activity(url), time.monotonic() - started)
            wait_for_projections()
    return (
        f"{result.describe()}\n    {split}\n"
        + (f"    slow answers: {result.stalls()}; {result.stalls(10)}\n" if rate else "")
        + textwrap.indent(meanwhile, "    meanwhile: ")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--root", type=Path, action="append", default=[])
    args = parser.parse_args()
    roots = args.root or [Path(__file__).resolve().parents[1]]
    print(f"machine: {machine()}")
    for run in range(args.repeat):
        for root in roots:
            print(f"[{run + 1}] {root}: ", end="", flush=True)
            print(measure(root.resolve(), args.workers, args.deliveries, args.rate), flush=True)


if __name__ == "__main__":
    main()
