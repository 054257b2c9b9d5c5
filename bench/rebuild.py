"""Rebuild benchmark on PostgreSQL: a projection rebuild of a million facts, beside its ceiling
measured in the same run on the same rows, the raw rate of reading them with psycopg.

    python bench/rebuild.py [--facts 1000000] [--keep]

Seeds a scratch database with synthetic prescriptions straight into the event store, then
measures, on the same rows: (1) psycopg reading the events table in notification order (the
ceiling), (2) the library reading and decoding the notification log, (3) `drx projections
rebuild prescriptions`, run as an operator runs it, in a process of its own (its bulk phase in
worker processes, then the final transaction and the atomic swap): the rate it reports, and the
peak memory of it and its workers together (sampled every 0.1 s). Then the rebuild's rate
beside the goals: at least 40,000 events/s, and at least a quarter of the raw read's rate.
`--keep` keeps the seeded database (`rb_rebuild_<facts>`) and reuses it when it is there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ADMIN_URL, descendants, machine, memory_of, seed_store
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap

GOAL_RATE = 40_000.0  # events/s
GOAL_SHARE = 0.25  # of the raw read's rows/s


@contextlib.contextmanager
def database(facts: int, keep: bool) -> Iterator[tuple[str, bool]]:
    """A database for the run, as a URL, and whether it is seeded already (a kept one whose
    seeding finished: it holds `bench_seeded`; one that does not is made again)."""
    name = f"rb_rebuild_{facts}" if keep else f"rb_bench_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    url = f"postgresql://{info.get('user') or 'postgres'}@{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}/{name}"
    seeded = False
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            with psycopg.connect(url, autocommit=True) as conn:
                found = conn.execute("SELECT to_regclass('bench_seeded')").fetchone()
                seeded = bool(found and found[0])
            if not seeded:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not seeded:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url, seeded
    finally:
        if not keep:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_read(url: str) -> tuple[int, float]:
    started, rows = time.perf_counter(), 0
    with psycopg.connect(url) as conn, conn.cursor(name="raw") as cursor:
        cursor.itersize = 10_000
        cursor.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM drx_events ORDER BY notification_id"
        )
        for _ in cursor:
            rows += 1
    return rows, time.perf_counter() - started


def library_read(settings: Settings) -> tuple[int, float]:
    with bootstrap(settings) as parts:
        app = parts.prescriptions
        started, rows, start = time.perf_counter(), 0, 1
        while True:
            batch = app.recorder.select_notifications(start=start, limit=10_000)
            if not batch:
                break
            for notification in batch:
                app.mapper.to_domain_event(notification)
            rows += len(batch)
            start = batch[-1].id + 1
    return rows, time.perf_counter() - started


@contextlib.contextmanager
def peak_memory() -> Iterator[list[float]]:
    """The peak of the resident memory of this process's descendants together, in MB (sampled
    every 0.1 s while the block runs): `[peak]` once it is done."""
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], memory_of(descendants(os.getpid()))[0])

    thread = threading.Thread(target=sample, name="memory", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def rebuild_command(url: str) -> str:
    """`drx projections rebuild prescriptions` on the database, in a process of its own; what
    it printed."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", "projections", "rebuild", "prescriptions"],
        env={**os.environ, "DRX_DATABASE_URL": url, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"drx projections rebuild failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database, reuse it")
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    with database(args.facts, args.keep) as (url, seeded):
        settings = Settings(database_url=url)
        migrate(settings)  # a kept database: the migrations added since it was seeded
        if not seeded:
            seed_store(settings, facts=args.facts)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE drx_events")
                conn.execute("CREATE TABLE bench_seeded ()")
        raw_rows, raw_s = raw_read(url)
        raw_rate = raw_rows / raw_s
        print(
            f"raw psycopg read of the events:     {raw_rows:>10,} rows   {raw_s:6.1f} s  {raw_rate:>9,.0f} rows/s"
        )
        rows, seconds = library_read(settings)
        print(
            f"notification log read and decoded:  {rows:>10,} events {seconds:6.1f} s  {rows / seconds:>9,.0f} events/s"
        )
        with bootstrap(settings) as parts:
            # The live model is empty and at the store's head: rebuild it as a live one.
            with parts.read_db.transaction() as cursor:
                cursor.execute(
                    "INSERT INTO drx_projection_tracking VALUES ('prescriptions', %s)"
                    " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    (parts.prescriptions.recorder.max_notification_id(),),
                )
            workers = parts.rebuilder.workers
        with peak_memory() as peak:
            said = rebuild_command(url)
        found = re.search(
            r"([\d,]+) events replayed in ([\d.]+) s \(([\d,]+) events/s\) into ([\d,]+) rows", said
        )
        if found is None:
            sys.exit(f"drx projections rebuild said: {said}")
        events, seconds, rate, rows = (float(found[i].replace(",", "")) for i in range(1, 5))
        print(
            f"drx projections rebuild prescriptions: {events:>7,.0f} events {seconds:6.1f} s  "
            f"{rate:>9,.0f} events/s  ({rows:,.0f} rows, swapped; bulk phase in {workers} "
            f"worker processes; peak memory {peak[0]:,.0f} MB, it and its workers)"
        )
        share = rate / raw_rate
        met = rate >= GOAL_RATE and share >= GOAL_SHARE
        print(
            f"rebuild {rate:,.0f} events/s (goal >= {GOAL_RATE:,.0f})  raw read {raw_rate:,.0f} "
            f"rows/s  share {share:.2f} (goal >= {GOAL_SHARE:.2f})  {'met' if met else 'NOT MET'}"
        )
    print(f"ended {datetime.now(UTC):%H:%M:%S} UTC; load average {os.getloadavg()[0]:.1f}")
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
