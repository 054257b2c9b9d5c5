"""Fault scenario: the service is killed with SIGKILL three times during a simulated burst and
restarted; every delivery that got a 2xx must be stored, none twice, and the read models must
converge. Prints the counts; exits 1 when anything was lost or doubled.

    python bench/fault_kill.py [--prescriptions 300] [--workers 1]
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ServeProcess, machine, scratch_database
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.simulator import RateLimiter, Sender, Tally, check_states, plan

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "fault-key"
PORT = 18790


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prescriptions", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        migrate(Settings(database_url=url))
        server = ServeProcess(
            {"DRX_DATABASE_URL": url, "DRX_WEBHOOK_SECRETS": SECRET, "DRX_API_KEYS": KEY},
            PORT,
            "--workers",
            str(args.workers),
        )
        server.start()
        planned = plan(args.prescriptions, duplicates=0.1, shuffle=True, seed=11)
        tally = Tally()
        sender = Sender(f"http://127.0.0.1:{PORT}/webhooks/drx", SECRET, tally, RateLimiter(None))
        work: queue.Queue[dict | None] = queue.Queue()
        for event in planned.sends:
            work.put(event)
        total, done = len(planned.sends), [0]

        def worker() -> None:
            while (event := work.get()) is not None:
                sender.deliver(event)
                with tally.lock:
                    done[0] += 1

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            work.put(None)
            thread.start()
        for kill in (1, 2, 3):  # at a quarter, a half and three quarters of the burst
            while done[0] < total * kill / 4:
                time.sleep(0.01)
            server.kill()
            print(f"SIGKILL {kill} at {done[0]}/{total} deliveries; restarting")
            time.sleep(0.5)
            server.start()
        for thread in threads:
            thread.join()
        equal, mismatches = check_states(f"http://127.0.0.1:{PORT}", KEY, planned.lifecycles)
        server.kill()
        unique = {e["id"] for events in planned.lifecycles.values() for e in events}
        with psycopg.connect(url) as conn:
            stored_deliveries = conn.execute(
                "SELECT COUNT(*) FROM drx_events WHERE topic LIKE '%Delivery.Received'"
            ).fetchone()[0]
            facts = conn.execute(
                "SELECT COUNT(*) FROM drx_events WHERE topic LIKE 'domain.prescription:%' "
                "AND topic NOT LIKE '%.Opened'"
            ).fetchone()[0]
    acknowledged = tally.sent
    lost = len(unique) - stored_deliveries if tally.gave_up == 0 else tally.gave_up
    doubled = facts - len(unique)
    print(
        f"sent {total} deliveries ({len(unique)} distinct events): {acknowledged} acknowledged "
        f"({dict(tally.outcomes)}), {tally.retried} retried after a refusal or a dropped "
        f"connection, {tally.gave_up} given up"
    )
    print(
        f"stored: {stored_deliveries} deliveries, {facts} facts; lost {lost}, doubled {doubled}; "
        f"read models: {equal} of {len(planned.lifecycles)} prescriptions equal their facts"
    )
    return 0 if lost == 0 and doubled == 0 and not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
