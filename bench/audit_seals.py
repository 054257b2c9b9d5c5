"""Seal verification benchmark on PostgreSQL: the rate of `drx audit verify`'s seal pass over at
least 500,000 stored events, beside the raw rate of reading the same rows the same way in the
same run.

    python bench/audit_seals.py [--events 500000]

Fills a scratch database's events table with synthetic events in bulk (INSERT ... SELECT
from generate_series: originator ids, versions, topics, JSON states of 0.3 to 1.6 KB), seals
them with the service's sealer and stores a checkpoint, then measures on the same rows: (1) the
raw read: the verifier's own keyset-paginated binary queries over the events and their seals,
in its snapshot, rows only; (2) `SealVerifier.verify`: the same reads, each event encoded and
hashed, each seal's link checked, the checkpoint held against the chain. Goal: at least 100,000
events/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, scratch_database
from domain.seals import EVENTS
from infrastructure.migrations import migrate
from infrastructure.seals import _pages, _snapshot, _sources
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap

GOAL = 100_000  # events verified per second

# Aggregates of six events each, stored in order; each state a JSON document of 300 to 1,600
# bytes (about what a fact's data or a delivery's body holds).
FILL = """
INSERT INTO drx_events (originator_id, originator_version, topic, state)
SELECT md5('rx' || (n / 6)::text)::uuid, n %% 6 + 1,
       'domain.prescription:Prescription.' || (ARRAY['Opened', 'Received', 'Sent', 'Shipped',
       'Delivered', 'Cancelled'])[n %% 6 + 1],
       convert_to('{"data":"' || repeat(md5(n::text), 8 + n %% 42) || '","n":' || n || '}', 'UTF8')
FROM generate_series(%s, %s - 1) AS n
"""


def fill(url: str, events: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, events, 100_000):
            conn.execute(FILL, (start, min(start + 100_000, events)))
        conn.execute("VACUUM ANALYZE drx_events")
    return time.perf_counter() - started


def raw_read(settings: Settings) -> tuple[int, int, float]:
    """The events and their seals as the verifier reads them, without checking anything."""
    source = next(s for s in _sources(settings.dialect) if s.kind is EVENTS)
    started = time.perf_counter()
    with _snapshot(settings) as query:
        events = sum(1 for _ in _pages(query, source.items_sql))
        seals = sum(1 for _ in _pages(query, source.seals_sql))
    return events, seals, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with scratch_database() as url:
        settings = Settings(database_url=url)
        migrate(settings)
        seconds = fill(url, args.events)
        print(f"stored {args.events:,} synthetic events in {seconds:.1f} s")
        with bootstrap(settings) as parts:
            started = time.perf_counter()
            checkpoint = parts.sealer.checkpoint()
            seconds = time.perf_counter() - started
            print(
                f"sealed:                        {checkpoint.events.count:>10,} events "
                f"{seconds:6.1f} s  {checkpoint.events.count / seconds:>9,.0f} events/s"
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE drx_audit_seals")
            events, seals, seconds = raw_read(settings)
            print(
                f"raw read, events and seals:    {events:>10,} events {seconds:6.1f} s  "
                f"{events / seconds:>9,.0f} events/s ({seals:,} seal rows beside)"
            )
            started = time.perf_counter()
            report = parts.seal_verifier.verify()
            seconds = time.perf_counter() - started
            verified = report.sequences["events"].sealed
            print(
                f"seal verification:             {verified:>10,} events {seconds:6.1f} s  "
                f"{verified / seconds:>9,.0f} events/s (goal {GOAL:,}); "
                f"{len(report.findings)} finding(s), {report.checkpoints} checkpoint(s) held"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
