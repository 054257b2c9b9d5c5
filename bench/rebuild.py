"""Rebuild benchmark on PostgreSQL: a projection rebuild of at least a million facts, side by side
in the same run with the raw rate of reading the same rows with psycopg.

    python bench/rebuild.py [--facts 1000000]

Seeds a scratch database with synthetic prescriptions straight into the event store, then
measures, on the same rows: (1) psycopg reading the events table in notification order,
(2) the library reading and decoding the notification log, (3) `Rebuilder.rebuild` of the
prescriptions read model (replay into a fresh table, then the atomic swap).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, scratch_database, seed_store
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facts", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        settings = Settings(database_url=url)
        migrate(settings)
        seed_store(settings, facts=args.facts)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE drx_events")
        rows, seconds = raw_read(url)
        print(
            f"raw psycopg read of the events:     {rows:>10,} rows   {seconds:6.1f} s  {rows / seconds:>9,.0f} rows/s"
        )
        rows, seconds = library_read(settings)
        print(
            f"notification log read and decoded:  {rows:>10,} events {seconds:6.1f} s  {rows / seconds:>9,.0f} events/s"
        )
        with bootstrap(settings) as parts:
            # The live model is empty and at position 0 in a fresh store: rebuild it as a live one.
            with parts.read_db.transaction() as cursor:
                cursor.execute(
                    "INSERT INTO drx_projection_tracking VALUES ('prescriptions', %s)",
                    (parts.prescriptions.recorder.max_notification_id(),),
                )
            result = parts.rebuilder.rebuild("prescriptions", verify=False)
        print(
            f"rebuild of the prescriptions model: {result.events:>10,} events {result.seconds:6.1f} s  "
            f"{result.events / result.seconds:>9,.0f} events/s  ({result.rows:,} rows, swapped)"
        )


if __name__ == "__main__":
    main()
