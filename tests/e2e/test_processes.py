"""The real `drx serve` in its own processes: a restart keeps every acknowledged delivery, and two
processes racing on one prescription on PostgreSQL both land every delivery."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.common import descendants, niceness
from infrastructure.eventstore import open_prescriptions
from infrastructure.migrations import migrate
from interfaces import projector_process
from tests.conftest import sqlite_settings
from tests.helpers import (
    API_KEY,
    AUTH,
    LIFECYCLES,
    body_of,
    is_stored,
    load_example,
    load_lifecycle,
    metric,
    new_secret,
    relabelled,
    signed_headers,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `drx serve` (its own process group, so that a kill takes its workers too)."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "interfaces.cli", "serve", "--port", str(self.port), *args],
                # Its temporary files (the metrics directory) in the test's own directory,
                # so that a killed server leaves nothing in the machine's /tmp.
                env={
                    **os.environ,
                    **env,
                    "PYTHONPATH": str(Path(__file__).parents[2]),
                    "TMPDIR": str(cwd),
                },
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"drx serve exited: {self.log.read_text()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("drx serve did not answer /health within 30 s")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={**AUTH, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def deliver(self, payload: dict, secret: str) -> int:
        body = body_of(payload)
        return self.request("POST", "/webhooks/drx", body, signed_headers(body, secret))[0]

    def wait_for_projections(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, projections = self.request("GET", "/projections")
            if status == 200 and all(p["lag"] == 0 for p in projections):
                return
            time.sleep(0.05)
        raise AssertionError(f"projections still lag after {timeout_s} s: {projections}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def server_env(settings, secret: str) -> dict[str, str]:
    """The environment a `drx serve` on `settings` runs with."""
    env = {
        "DRX_DATABASE_URL": settings.database_url,
        "DRX_WEBHOOK_SECRETS": secret,
        "DRX_API_KEYS": API_KEY,
    }
    if settings.dialect == "postgresql":
        env |= {"DRX_POSTGRES_SCHEMA": settings.postgres_schema, "DRX_POSTGRES_POOL_SIZE": "2"}
    return env


BOTH_STORES = pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
ON_POSTGRES = pytest.mark.parametrize(
    "store", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def test_acknowledged_deliveries_survive_a_killed_service(store, tmp_path):
    secret = new_secret()
    env = server_env(store, secret)
    first = Server(env, tmp_path)
    try:
        assert first.deliver(load_example("received"), secret) == 202
        assert first.deliver(load_example("shipped"), secret) == 202
    finally:
        first.kill()
    second = Server(env, tmp_path)
    try:
        second.wait_for_projections()
        status, state = second.request("GET", "/prescriptions/drx_rx_7Q2M9K")
        assert (status, state["status"], state["version"]) == (200, "shipped", 2)
        assert second.deliver(load_example("shipped"), secret) == 200
    finally:
        second.kill()


@BOTH_STORES
def test_after_a_kill_mid_burst_and_a_restart_every_listed_prescription_equals_the_store(
    store, tmp_path
):
    secret = new_secret()
    env = server_env(store, secret)
    events = [
        event
        for n in range(12)
        for path in LIFECYCLES
        for event in relabelled(load_lifecycle(path), f"b{n}")
    ]
    random.Random(5).shuffle(events)
    acknowledged: set[str] = set()

    def send(server: Server, event: dict) -> None:
        try:
            if 200 <= server.deliver(event, secret) < 300:
                acknowledged.add(event["id"])
        except (OSError, http.client.HTTPException):
            pass  # the connection died with the server (maybe mid-answer): DRx will retry

    server = Server(env, tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(send, server, event) for event in events]
        while len(acknowledged) < len(events) // 3:
            time.sleep(0.005)
        server.kill()  # SIGKILL in the middle of the burst
        for future in futures:
            future.result()
    assert 0 < len(acknowledged) < len(events)

    server = Server(env, tmp_path)
    try:
        unacknowledged = [e for e in events if e["id"] not in acknowledged]
        with ThreadPoolExecutor(max_workers=8) as pool:  # DRx retries what was not acknowledged
            list(pool.map(lambda e: send(server, e), unacknowledged))
        assert len(acknowledged) == len(events)
        server.wait_for_projections()
        listed, cursor = [], None
        while True:
            _, page = server.request(
                "GET", "/prescriptions?limit=13" + (f"&cursor={cursor}" if cursor else "")
            )
            listed += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    finally:
        server.kill()
    store_app = open_prescriptions(store)
    try:
        assert len(listed) == len({e["subject"] for e in events})
        for item in listed:
            assert item == store_app.state(item["prescription_id"]).as_dict()
        assert all(is_stored(store_app, event_id) for event_id in acknowledged)
        assert sum(store_app.state(i["prescription_id"]).version for i in listed) == len(events)
    finally:
        store_app.close()


@ON_POSTGRES
def test_two_processes_racing_on_one_prescription_land_every_delivery(store, tmp_path):
    secret = new_secret()
    servers = [Server(server_env(store, secret), tmp_path) for _ in range(2)]
    try:
        lifecycle = load_lifecycle(LIFECYCLES[-1])
        events = lifecycle["events"]
        # Every event goes to both processes at once: one stores it, the other answers duplicate.
        jobs = [(server, event) for event in events for server in servers]
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(lambda job: job[0].deliver(job[1], secret), jobs))
        assert sorted(codes) == [200] * len(events) + [202] * len(events), Counter(codes)
        servers[0].wait_for_projections()
        status, state = servers[0].request("GET", f"/prescriptions/{lifecycle['subject']}")
        expected = lifecycle["expected_final_state"]
        assert status == 200
        assert {key: state[key] for key in expected} == expected
    finally:
        for server in servers:
            server.kill()


@ON_POSTGRES
def test_several_workers_share_one_port_land_racing_deliveries_and_lead_projections_once(
    store, tmp_path
):
    secret = new_secret()
    server = Server(server_env(store, secret), tmp_path, "--workers", "3")
    try:
        events = [
            e
            for n in range(5)
            for path in LIFECYCLES
            for e in relabelled(load_lifecycle(path), f"w{n}")
        ]
        with ThreadPoolExecutor(max_workers=12) as pool:  # every event twice, at once
            codes = list(pool.map(lambda e: server.deliver(e, secret), events + events))
        assert sorted(codes) == [200] * len(events) + [202] * len(events), Counter(codes)
        server.wait_for_projections()
        _, page = server.request("GET", "/prescriptions?limit=500")
        assert len(page["items"]) == len({e["subject"] for e in events})
        assert sum(item["version"] for item in page["items"]) == len(events)
        # The first worker up may have answered everything: wait for the others to report.
        deadline = time.monotonic() + 30
        while server.log.read_text().count("Started server process") < 3:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        # Under drx serve (its supervisor): the 3 web workers at the default priority, and the
        # projector's and the dispatcher's processes yielding to them; nothing else (no
        # resource tracker of multiprocessing's).
        niceness_seen = sorted(niceness(pid) for pid in descendants(server.process.pid))
        lowered = sorted(projector_process.NICENESS.values())
        assert niceness_seen == [0, 0, 0, *lowered], niceness_seen
        # One set of figures for the whole service, whichever worker answers the scrape.
        for _ in range(6):
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
                text = response.read().decode()
            deliveries = "drx_webhook_deliveries_total"
            assert metric(text, deliveries, outcome="accepted") == len(events), text
            assert metric(text, deliveries, outcome="duplicate") == len(events), text
            assert metric(text, "drx_webhook_latency_seconds_count") == 2 * len(events), text
    finally:
        server.kill()
    log = server.log.read_text()
    assert log.count("now runs the projections") == 1, log
    assert log.count("Started server process") == 3, log


def test_the_simulator_sends_shuffled_duplicated_lifecycles_and_every_state_checks_out(
    store, tmp_path, capsys
):
    from interfaces.simulator import simulate

    secret = new_secret()
    server = Server(server_env(store, secret), tmp_path)
    try:
        code = simulate(
            url=f"{server.url}/webhooks/drx",
            secret=secret,
            api_key=API_KEY,
            prescriptions=40,
            rate=None,
            duplicates=0.25,
            shuffle=True,
            connections=8,
            seed=4,
        )
    finally:
        server.kill()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "state check: 40 of 40 prescriptions equal what their facts imply" in out
    planned = re.search(r"(\d+) deliveries \((\d+) duplicates\)", out)
    assert planned, out
    total, duplicates = int(planned[1]), int(planned[2])
    assert f"sent {total} of {total} " in out
    assert f"{total - duplicates} accepted, {duplicates} duplicate;" in out


def test_the_sqlite_files_beside_a_new_store_are_readable_by_their_owner_only(tmp_path):
    """A first `drx serve` in an empty directory, on the defaults, as a new user runs it: the
    database, its WAL and shared memory, the projector's and dispatcher's locks and the development secrets
    are created 0600 (they hold patient data, and the keys to the API)."""
    previous = os.umask(0o022)
    try:
        env = {"DRX_DATABASE_URL": "", "DRX_WEBHOOK_SECRETS": "", "DRX_API_KEYS": ""}
        server = Server(env, tmp_path)
    finally:
        os.umask(previous)
    try:
        secret = (tmp_path / "drx.sqlite3.secrets").read_text().split("DRX_WEBHOOK_SECRETS=")[1]
        assert server.deliver(load_example("received"), secret.split()[0]) == 202
        deadline = time.monotonic() + 20  # the projector takes its lock once it has started
        locks = ["drx.sqlite3.projections.lock", "drx.sqlite3.dispatcher.lock"]
        while not all((tmp_path / lock).exists() for lock in locks):
            assert time.monotonic() < deadline, "the projector or dispatcher never took its lock"
            time.sleep(0.05)
        names = ["drx.sqlite3", "drx.sqlite3-wal", "drx.sqlite3-shm"]
        names += [*locks, "drx.sqlite3.secrets"]
        modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in names}
        assert modes == dict.fromkeys(names, 0o600)
    finally:
        server.kill()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_server_logs_no_request_line_query_or_patient_data(tmp_path, workers):
    """uvicorn writes an access line (with the query string: a patient id, say) whenever its
    access logger reaches a handler; `drx serve` must keep it from reaching any, with one web
    worker or several."""
    settings = sqlite_settings(tmp_path)
    migrate(settings)
    secret = new_secret()
    server = Server(server_env(settings, secret), tmp_path, "--workers", workers)
    try:
        assert server.deliver(load_example("received"), secret) == 202
        assert server.request("GET", "/prescriptions?patient_id=drx_pt_TEST01")[0] == 200
        assert server.request("GET", "/prescriptions/drx_rx_7Q2M9K")[0] in (200, 404)
    finally:
        server.kill()
    logged = server.log.read_text()
    assert "serving on" in logged  # the log is the server's
    for never in ("drx_pt_TEST01", "Testy", "drx_rx_7Q2M9K", "GET /", "POST /", "HTTP/1.1"):
        assert never not in logged, never


def _children(server: Server) -> dict[str, list[int]]:
    """The supervisor's children by role: "web" (the web workers) and "background" (the
    projector's process and the dispatcher's)."""
    found: dict[str, list[int]] = {"web": [], "background": []}
    for pid in descendants(server.process.pid):
        with contextlib.suppress(FileNotFoundError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"interfaces.web_worker" in command:
                found["web"].append(pid)
            elif b"interfaces.projector_process" in command:
                found["background"].append(pid)
    return found


def _replaced(server: Server, role: str, gone: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = [pid for pid in _children(server)[role] if pid != gone]
        if now and not Path(f"/proc/{gone}").exists():
            return now[-1]
        time.sleep(0.1)
    raise AssertionError(f"no {role} process took the place of {gone}: {server.log.read_text()}")


def test_a_child_that_dies_is_started_again_and_the_service_gets_well(tmp_path):
    """SIGKILL of a web worker, then of the projector's process and of the dispatcher's: the
    supervisor starts each again (saying so), and deliveries are answered and projected as
    before."""
    settings = sqlite_settings(tmp_path)
    migrate(settings)
    secret = new_secret()
    server = Server(server_env(settings, secret), tmp_path, "--workers", "2")
    try:
        events = relabelled(load_lifecycle(LIFECYCLES[0]), "restart")
        first, *rest = events
        assert server.deliver(first, secret) == 202
        web, background = _children(server)["web"], _children(server)["background"]
        assert len(web) == 2, web
        assert len(background) == 2, background

        os.kill(web[0], signal.SIGKILL)
        _replaced(server, "web", web[0])
        for pid in background:
            os.kill(pid, signal.SIGKILL)
            _replaced(server, "background", pid)

        for event in rest:
            assert server.deliver(event, secret) == 202
        server.wait_for_projections()
        _, state = server.request("GET", f"/prescriptions/{first['subject']}")
        assert state["version"] == len(events), state
        log = server.log.read_text()
        assert re.search(r"the web worker \(pid \d+\) ended with exit code -9", log), log
        assert re.search(r"the projector \(pid \d+\) ended", log), log
        assert re.search(r"the dispatcher \(pid \d+\) ended", log), log
    finally:
        server.kill()


def test_the_service_s_processes_end_with_their_supervisor(tmp_path):
    """SIGKILL of `drx serve` alone (not its process group): its children see their parent
    gone and stop by themselves, none left serving."""
    settings = sqlite_settings(tmp_path)
    migrate(settings)
    server = Server(server_env(settings, new_secret()), tmp_path, "--workers", "2")
    children = [pid for pids in _children(server).values() for pid in pids]
    assert len(children) == 4, children
    try:
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while alive := [pid for pid in children if Path(f"/proc/{pid}").exists()]:
            zombies = [
                pid
                for pid in alive
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            ]
            if zombies == alive:
                break
            assert time.monotonic() < deadline, f"still running without drx serve: {alive}"
            time.sleep(0.1)
    finally:
        server.kill()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_the_server_through_its_clean_up(tmp_path, workers):
    """What a service manager sends: the server, its workers and its projector stop, exit 0,
    and the metrics directory is removed (uvicorn sends the signal again once it has shut
    down, which the default handler would turn into an abrupt end)."""
    settings = sqlite_settings(tmp_path)
    migrate(settings)
    server = Server(server_env(settings, new_secret()), tmp_path, "--workers", workers)
    processes = descendants(server.process.pid)
    assert list(tmp_path.glob("drx-metrics-*")), "the server keeps its figures there"
    os.kill(server.process.pid, signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert list(tmp_path.glob("drx-metrics-*")) == []
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in processes):
        assert time.monotonic() < deadline, "a worker or the projector outlived the server"
        time.sleep(0.05)
    assert "Traceback" not in server.log.read_text()


@pytest.mark.serial
@BOTH_STORES
def test_a_revoked_key_is_refused_by_every_worker_within_5_s(store, tmp_path, monkeypatch):
    """`drx keys create` and `revoke` run as commands beside a `drx serve --workers 2`; each
    check opens a new connection, so that both workers answer over the loop."""
    env = server_env(store, new_secret())
    server = Server(env, tmp_path, "--workers", "2")
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "interfaces.cli",
                "keys",
                "create",
                "ops-app",
                "--scopes",
                "operate",
            ],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        key = next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("key "))
        as_ops = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 5
        accepted = 0
        # Twenty answers in a row as its scope says (200 on an operate path, 403 on a read one):
        # a worker that has not reloaded yet answers 401, and starts the count again (twenty in
        # a row may all come from one worker: the next one must still be right, within 5 s).
        while accepted < 20:
            path, expected = ("/projections", 200) if accepted % 2 else ("/prescriptions", 403)
            status = server.request("GET", path, headers=as_ops)[0]
            assert status in (expected, 401), (path, status)
            accepted = accepted + 1 if status == expected else 0
            assert time.monotonic() < deadline, "a new key was not taken up within 5 s"
        subprocess.run(
            [sys.executable, "-m", "interfaces.cli", "keys", "revoke", "ops-app"],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            cwd=tmp_path,
            capture_output=True,
            check=True,
        )
        revoked = time.monotonic()
        refused: list[int] = []
        while len(refused) < 20:
            status = server.request("GET", "/projections", headers=as_ops)[0]
            refused = [*refused, status] if status == 401 else []
            assert time.monotonic() - revoked < 5, "a worker still took the revoked key after 5 s"
    finally:
        server.kill()
