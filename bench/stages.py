"""CPU per delivery of each stage of the webhook path, without HTTP, on PostgreSQL.

    python bench/stages.py [--deliveries 8000] [--batch 1 16] [--projection-batch 1000] [--encrypt]

For simulated lifecycles (every kind of event, prescriptions interleaved), in this process on a
scratch database: the signature check and translation (`read_command`), saving in group-commit
batches of the given sizes (`record_deliveries`), and projecting the result (`catch_up`), each
as this process's CPU time per delivery and the PostgreSQL server's beside it. `--encrypt`
runs every size again with DRX_ENCRYPTION_KEY set. Process CPU time, not wall time, so the
figures hold while the machine does other things (this VM's rates vary by a third; these vary
by about a tenth).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.common import machine, postgres_cpu_s, scratch_database
from bench.webhook import KEY, SECRET, deliveries
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap
from interfaces.drx.signature import signed_headers
from interfaces.http.webhooks import read_command


def signed(bodies: list[bytes]) -> list[tuple[bytes, dict[str, str]]]:
    return [(body, signed_headers(SECRET, f"msg_{n}", body)) for n, body in enumerate(bodies)]


def measure(count: int, batch: int, projection_batch: int, key: str) -> str:
    requests = signed(deliveries(count, seed=8))
    with scratch_database() as url:
        settings = Settings(
            database_url=url, webhook_secrets=(SECRET,), api_keys=(KEY,), encryption_key=key
        )
        migrate(settings)
        with bootstrap(settings, batch_size=projection_batch) as parts:
            started = time.process_time()
            commands = [read_command(body, headers, parts.verifier) for body, headers in requests]
            translate = time.process_time() - started

            started, pg = time.process_time(), postgres_cpu_s()
            for first in range(0, count, batch):
                parts.intake.take_batch(commands[first : first + batch])  # type: ignore[arg-type]
            record, record_pg = time.process_time() - started, postgres_cpu_s() - pg

            started, pg = time.process_time(), postgres_cpu_s()
            events = parts.projector.catch_up()
            project, project_pg = time.process_time() - started, postgres_cpu_s() - pg

    def ms(seconds: float) -> str:
        return f"{seconds * 1000 / count:>7.3f}"

    return (
        f"{batch:>6}{'  yes' if key else '   no'}{ms(translate)}{ms(record)}{ms(record_pg)}"
        f"{ms(project)}{ms(project_pg)}   ({events:,} events)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=8000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--projection-batch", type=int, default=1000)
    parser.add_argument("--encrypt", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{args.deliveries:,} deliveries; ms of CPU per delivery (pg: the PostgreSQL server's)")
    print(f"{'':>11}{'check,':>7}{'':>7}{'save':>7}{'':>7}{'project':>7}")
    print(f"{'batch':>6}{'enc':>5}{'transl':>7}{'save':>7}{'pg':>7}{'project':>8}{'pg':>6}")
    keys = [""] + ([base64.b64encode(os.urandom(32)).decode()] if args.encrypt else [])
    for key in keys:
        for batch in args.batch:
            print(measure(args.deliveries, batch, args.projection_batch, key), flush=True)


if __name__ == "__main__":
    main()
