"""Run another benchmark against a private PostgreSQL cluster set up as docs/operations.md
advises for a large store, instead of this machine's server with Debian's defaults.

    python bench/tuned_postgres.py [--shared-buffers 2GB] SCRIPT [ITS ARGUMENTS...]
    python bench/tuned_postgres.py bench/webhook.py --workers 1

The cluster (initdb and pg_ctl, on a free port, `bench/pgcluster.py`) is as durable as a
production server (fsync, synchronous commits and full-page writes on: every 2xx is still on
disk), with room in `shared_buffers` for the read tables' indexes, `wal_compression` lz4 and
checkpoints spaced out (`max_wal_size` 8 GB, `checkpoint_timeout` 15 min); autovacuum on, as on a
production server. The script runs with `DRX_BENCH_POSTGRES_URL` pointing at it (every
`bench/` script makes its scratch database there), so everything it measures beside the
service (pgbench's insert rate, the commit probe, the WAL counters) is the same server's. The
cluster is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pgcluster import private_cluster

ROOT = Path(__file__).resolve().parents[1]


def settings(shared_buffers: str) -> dict[str, str]:
    return {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "shared_buffers": shared_buffers,
        "wal_compression": "lz4",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "15min",
        "max_connections": "200",
        "autovacuum": "on",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared-buffers", default="2GB")
    parser.add_argument("script")
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    chosen = settings(args.shared_buffers)
    with private_cluster(chosen) as cluster:
        print("PostgreSQL: a private cluster, " + ", ".join(f"{k} {v}" for k, v in chosen.items()))
        env = {**os.environ, "DRX_BENCH_POSTGRES_URL": cluster.url("postgres")}
        done = subprocess.run(
            [sys.executable, args.script, *args.arguments], cwd=ROOT, env=env, check=False
        )
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
