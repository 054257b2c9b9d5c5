"""Fault scenarios on PostgreSQL, each from one command, each ending with a count of what was
acknowledged and what is stored; exit 1 when anything was lost or doubled.

    python bench/faults.py kill      # SIGKILL the service three times during a burst, restart it
    python bench/faults.py pg-stop   # stop PostgreSQL for a few seconds in the middle of a burst
    python bench/faults.py poison    # a bug forced in the handling of one payload, then fixed

The burst is `drx simulate`'s (shuffled lifecycles, a tenth sent twice, DRx-like retries that
honour Retry-After). `pg-stop` stops and restarts this machine's PostgreSQL cluster
(pg_ctlcluster): run it on a machine of your own, never beside other users of that server.
`poison` serves the application from this process (uvicorn in a thread), so that a bug can be
forced into the domain code for one payload and then taken out again, as a fix deployed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import domain.prescription
from bench.common import ServeProcess, machine, scratch_database
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.http.app import create_app
from interfaces.simulator import RateLimiter, Sender, Tally, check_states, plan

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "fault-key"
PORT = 18790
SEED = 11


def burst(
    prescriptions: int, fault: Callable[[Callable[[], float]], None]
) -> tuple[Tally, dict, int]:
    """Send a simulated burst from 16 connections while `fault` runs, given the share done."""
    planned = plan(prescriptions, duplicates=0.1, shuffle=True, seed=SEED)
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
    fault(lambda: done[0] / total)
    for thread in threads:
        thread.join()
    return tally, planned.lifecycles, total


def kill_three_times(server: ServeProcess) -> Callable[[Callable[[], float]], None]:
    def fault(progress: Callable[[], float]) -> None:
        for kill in (1, 2, 3):  # at a quarter, a half and three quarters of the burst
            while progress() < kill / 4:
                time.sleep(0.01)
            server.kill()
            print(f"SIGKILL {kill} at {progress():.0%} of the burst; restarting")
            time.sleep(0.5)
            server.start()

    return fault


def stop_postgres(seconds: float) -> Callable[[Callable[[], float]], None]:
    cluster = subprocess.run(
        ["ls", "/etc/postgresql"], capture_output=True, text=True, check=True
    ).stdout.split()[0]

    def ctl(action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", action], check=True
        )

    def fault(progress: Callable[[], float]) -> None:
        while progress() < 0.4:
            time.sleep(0.01)
        ready: Counter[int] = Counter()
        ctl("stop")
        print(f"PostgreSQL stopped at {progress():.0%} of the burst for {seconds:.0f} s")
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.monotonic()
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
                conn.request("GET", "/ready")
                status = conn.getresponse().status
                ready[status] += 1
                print(f"  /ready: {status} in {time.monotonic() - started:.1f} s")
                time.sleep(0.5)
        finally:
            ctl("start")
        print(f"PostgreSQL started again; /ready answered {dict(ready)} while it was down")

    return fault


def api(method: str, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    conn.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


@contextlib.contextmanager
def in_process_server(settings: Settings) -> Iterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), port=PORT, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def poison(url: str, prescriptions: int) -> int:
    """A bug in the domain code that fails on one payload: that delivery is parked with its
    reason, every other one flows; once the bug is fixed, the replay applies it."""
    lifecycles = plan(prescriptions, duplicates=0.1, shuffle=True, seed=SEED).lifecycles
    victim = next(iter(lifecycles.values()))[1]  # the second fact of a prescription
    real = domain.prescription.derive_state

    def bug(subject: str, facts: Any) -> Any:
        if any(fact.event_id == victim["id"] for fact in facts):
            raise KeyError("a bug that only this payload sets off")
        return real(subject, facts)

    settings = Settings(database_url=url, webhook_secrets=(SECRET,), api_keys=(KEY,))
    with in_process_server(settings):
        domain.prescription.derive_state = bug  # type: ignore[assignment]
        print(f"bug forced: the handling of {victim['id']} ({victim['type']}) raises")
        tally, lifecycles, total = burst(prescriptions, lambda _: None)
        _, parked = api("GET", "/deliveries?status=parked")
        print(f"parked during the burst: {[(d['event_id'], d['reason']) for d in parked['items']]}")
        domain.prescription.derive_state = real
        print("bug fixed (the real code is back); replaying the parked deliveries")
        replayed = [api("POST", f"/deliveries/{d['event_id']}/replay") for d in parked["items"]]
        print(f"replays: {[(status, body['status']) for status, body in replayed]}")
        only_victim = [d["event_id"] for d in parked["items"]] == [victim["id"]]
        code = report(url, tally, lifecycles, total)
        _, still = api("GET", "/deliveries?status=parked")
        print(f"parked after the replay: {len(still['items'])}")
    return 0 if code == 0 and only_victim and not still["items"] else 1


def report(url: str, tally: Tally, lifecycles: dict, total: int) -> int:
    equal, mismatches = check_states(f"http://127.0.0.1:{PORT}", KEY, lifecycles)
    unique = {e["id"] for events in lifecycles.values() for e in events}
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT COUNT(*) FROM drx_events WHERE topic LIKE '%Delivery.Received'"
        ).fetchone()[0]
        facts = conn.execute(
            "SELECT COUNT(*) FROM drx_events WHERE topic LIKE "
            "'domain.prescription:%' AND topic NOT LIKE '%.Opened'"
        ).fetchone()[0]
    lost = len(unique) - stored + tally.gave_up
    doubled = facts - len(unique)
    print(
        f"sent {total} deliveries ({len(unique)} distinct events): {tally.sent} acknowledged "
        f"({dict(tally.outcomes)}), refused on the way {dict(tally.refused)} (0 = connection "
        f"dropped), {tally.retried} retried, {tally.gave_up} given up"
    )
    print(
        f"stored: {stored} deliveries, {facts} facts; lost {lost}, doubled {doubled}; "
        f"read models: {equal} of {len(lifecycles)} prescriptions equal their facts"
    )
    return 0 if lost == 0 and doubled == 0 and not mismatches else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["kill", "pg-stop", "poison"])
    parser.add_argument("--prescriptions", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=6, help="pg-stop: how long it is down")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_database() as url:
        migrate(Settings(database_url=url))
        if args.scenario == "poison":
            code = poison(url, args.prescriptions)
        else:
            code = out_of_process(url, args)
    print(json.dumps({"scenario": args.scenario, "result": "ok" if code == 0 else "FAILED"}))
    return code


def out_of_process(url: str, args: argparse.Namespace) -> int:
    server = ServeProcess(
        {"DRX_DATABASE_URL": url, "DRX_WEBHOOK_SECRETS": SECRET, "DRX_API_KEYS": KEY}, PORT
    )
    server.start()
    try:
        fault = kill_three_times(server) if args.scenario == "kill" else stop_postgres(args.seconds)
        tally, lifecycles, total = burst(args.prescriptions, fault)
        return report(url, tally, lifecycles, total)
    finally:
        server.kill()


if __name__ == "__main__":
    sys.exit(main())
