"""Fault scenarios on PostgreSQL, each from one command, each ending with a count of what was
acknowledged and what is stored; exit 1 when anything was lost or doubled.

    python bench/faults.py kill      # SIGKILL the service three times during a burst, restart it
    python bench/faults.py pg-stop   # stop PostgreSQL for a few seconds in the middle of a burst
    python bench/faults.py poison    # a bug forced in the handling of one payload, then fixed
    python bench/faults.py pg-restart-under-load [--mode immediate|fast|terminate] [--seconds S]
                                     # senders that never pause; PostgreSQL stopped and started

The burst is `drx simulate`'s (shuffled lifecycles, a tenth sent twice, DRx-like retries that
honour Retry-After). `pg-stop` stops and restarts this machine's PostgreSQL cluster
(pg_ctlcluster): run it on a machine of your own, never beside other users of that server.
`pg-restart-under-load` runs on a private cluster of its own (bench/pgcluster.py: initdb and
pg_ctl on a free port), so stopping it disturbs nothing else: 8 senders post signed deliveries
without ever pausing (a 503 is retried at once, as DRx flushing a backlog would), the cluster is
stopped (`-m immediate` or `-m fast`) for `--seconds`, or its sessions are ended with
pg_terminate_backend, and it prints the seconds from the database accepting connections again
to the first 202, and to the read models catching up.
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
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import domain.prescription
from bench.common import ServeProcess, machine, scratch_database
from bench.pgcluster import private_cluster
from domain.ids import delivery_id
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.drx.signature import signed_headers
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


class ConstantLoad:
    """Senders that never pause: each posts signed deliveries (a `received` for a prescription
    of its own, then facts on it) one after another, and retries a refused one at once. It
    records every answer's time and status, and which event ids were acknowledged."""

    def __init__(self, port: int, secret: str, senders: int = 8) -> None:
        self.port, self.secret, self.senders = port, secret, senders
        self.answers: list[tuple[float, int]] = []  # (monotonic time, status; 0 = no answer)
        self.acknowledged: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(senders)
        ]

    def __enter__(self) -> ConstantLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def first_after(self, moment: float, status: int, timeout_s: float) -> float | None:
        """Seconds from `moment` to the first answer with `status` after it (None: none came)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = [at for at, got in self.answers if at >= moment and got == status]
            if found:
                return min(found) - moment
            time.sleep(0.02)
        return None

    def statuses_between(self, start: float, end: float) -> Counter[int]:
        with self.lock:
            return Counter(got for at, got in self.answers if start <= at < end)

    def _send(self, sender: int) -> None:
        conn: http.client.HTTPConnection | None = None
        for n in range(10**9):
            if self._stop.is_set():
                return
            kind = "received" if n % 4 == 0 else "sent"
            event = {
                "id": f"evt_load_{sender}_{n}",
                "type": f"drx.prescription.{kind}",
                "schema_version": "1.0",
                "source": "drx:bench",
                "occurred_at": f"2025-01-01T00:00:{n % 4:02d}Z",
                "subject": f"drx_rx_load_{sender}_{n // 4}",
                "data": RECEIVED_DATA if kind == "received" else {},
            }
            body = json.dumps(event).encode()
            while not self._stop.is_set():
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                headers = signed_headers(self.secret, f"msg_{uuid.uuid4().hex}", body)
                try:
                    conn.request("POST", "/webhooks/drx", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn, status = None, 0
                    time.sleep(0.01)  # a refused connection returns at once
                with self.lock:
                    self.answers.append((time.monotonic(), status))
                    if status in (200, 202):
                        self.acknowledged.add(event["id"])
                if status in (200, 202):
                    break


RECEIVED_DATA = json.loads(
    (
        Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "examples" / "received.json"
    ).read_text()
)["data"]


def restart_under_load(mode: str, seconds: float, senders: int = 8) -> int:
    """The database stopped and started (or its sessions ended) under constant load: how soon
    the webhook answers 202 again and the read models catch up, and that nothing acknowledged
    was lost or stored twice."""
    with private_cluster() as cluster:
        url = cluster.create_database("drx")
        migrate(Settings(database_url=url))
        env = {"DRX_DATABASE_URL": url, "DRX_WEBHOOK_SECRETS": SECRET, "DRX_API_KEYS": KEY}
        server = ServeProcess(env, PORT)
        server.start()
        try:
            with ConstantLoad(PORT, SECRET, senders) as load:
                time.sleep(3)
                down = time.monotonic()
                if mode == "terminate":
                    ended = cluster.terminate_backends("drx")
                    print(f"pg_terminate_backend ended {ended} sessions under load")
                else:
                    cluster.stop(mode)
                    print(f"PostgreSQL stopped (-m {mode}) under load, for {seconds:.0f} s")
                    time.sleep(seconds)
                    cluster.start()
                back = time.monotonic()
                first = load.first_after(back, 202, timeout_s=60)
                caught_up = wait_for_lag_zero(timeout_s=60)
                time.sleep(3)
            during = load.statuses_between(down, back)
            after = load.statuses_between(back, time.monotonic())
            print(f"answers while it was down: {dict(during)}; after it was back: {dict(after)}")
            print(
                "first 202 after the database accepted connections again: "
                + (f"{first:.2f} s" if first is not None else "none within 60 s")
            )
            print(
                "read models caught up: "
                + (f"{caught_up - back:.2f} s after" if caught_up else "not within 60 s")
            )
            code = count_lost_and_doubled(url, load.acknowledged)
        finally:
            server.kill()
    return 0 if code == 0 and first is not None and first <= 5 and caught_up else 1


def wait_for_lag_zero(timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            status, rows = api("GET", "/projections")
            if status == 200 and all(row["lag"] == 0 for row in rows):
                return time.monotonic()
        time.sleep(0.1)
    return None


def count_lost_and_doubled(url: str, acknowledged: set[str]) -> int:
    with psycopg.connect(url) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT originator_id FROM drx_events WHERE topic LIKE '%Delivery.Received'"
            )
        }
        facts, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT originator_id) FROM drx_events WHERE topic LIKE "
            "'domain.prescription:%' AND topic NOT LIKE '%.Opened'"
        ).fetchone()
    lost = sum(1 for event_id in acknowledged if delivery_id(event_id) not in stored)
    doubled = facts - len(stored)
    print(
        f"acknowledged {len(acknowledged)}; stored {len(stored)} deliveries, {facts} facts on "
        f"{distinct} prescriptions: lost {lost}, doubled {doubled}"
    )
    return 0 if lost == 0 and doubled == 0 else 1


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
    real, real_extend = domain.prescription.derive_state, domain.prescription.extend_state

    def bug(subject: str, facts: Any) -> Any:
        if any(fact.event_id == victim["id"] for fact in facts):
            raise KeyError("a bug that only this payload sets off")
        return real(subject, facts)

    def extend_bug(state: Any, fact: Any) -> Any:
        if fact.event_id == victim["id"]:
            raise KeyError("a bug that only this payload sets off")
        return real_extend(state, fact)

    settings = Settings(database_url=url, webhook_secrets=(SECRET,), api_keys=(KEY,))
    with in_process_server(settings):
        domain.prescription.derive_state = bug  # type: ignore[assignment]
        domain.prescription.extend_state = extend_bug  # type: ignore[assignment]
        print(f"bug forced: the handling of {victim['id']} ({victim['type']}) raises")
        tally, lifecycles, total = burst(prescriptions, lambda _: None)
        _, parked = api("GET", "/deliveries?status=parked")
        print(f"parked during the burst: {[(d['event_id'], d['reason']) for d in parked['items']]}")
        domain.prescription.derive_state = real
        domain.prescription.extend_state = real_extend
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
    parser.add_argument("scenario", choices=["kill", "pg-stop", "poison", "pg-restart-under-load"])
    parser.add_argument(
        "--mode",
        choices=["immediate", "fast", "terminate"],
        default="immediate",
        help="pg-restart-under-load: how PostgreSQL goes away",
    )
    parser.add_argument("--prescriptions", type=int, default=300)
    parser.add_argument(
        "--seconds",
        type=float,
        default=6,
        help="pg-stop, pg-restart-under-load: how long it is down",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.scenario == "pg-restart-under-load":
        code = restart_under_load(args.mode, args.seconds)
        print(json.dumps({"scenario": args.scenario, "result": "ok" if code == 0 else "FAILED"}))
        return code
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
