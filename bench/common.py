"""Shared by the benchmarks: a throwaway PostgreSQL database, synthetic prescriptions, timing."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from domain.facts import Fact, FactKind
from domain.prescription import Prescription
from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap

ADMIN_URL = os.environ.get(
    "DRX_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "examples"
RECEIVED = json.loads((EXAMPLES / "received.json").read_text())["data"]


@contextlib.contextmanager
def scratch_database(keep: bool = False) -> Iterator[str]:
    """A new database for one benchmark run, as a URL; dropped afterwards unless `keep`."""
    name = f"drx_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    url = f"postgresql://{info.get('user') or 'postgres'}@{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}/{name}"
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def lifecycle_steps(
    tracking_number: str, patient: str, pharmacy: str, at: datetime
) -> list[tuple[FactKind, dict[str, Any]]]:
    """The synthetic lifecycle the benchmarks cut: received (for `patient` at `pharmacy`), sent,
    processing, dispensed, shipped, delivered, cancelled; `at` is the fill's instants."""
    data = copy.deepcopy(RECEIVED)
    data["patient"]["drx_patient_id"] = f"drx_pt_{patient}"
    data["pharmacy"]["ncpdp_id"] = pharmacy
    instant = at.isoformat()
    return [
        (FactKind.RECEIVED, data),
        (FactKind.SENT, {"transmission": {"status": "sent"}}),
        (FactKind.PROCESSING, {"fill_number": 1, "stage": "filling"}),
        (
            FactKind.DISPENSED,
            {
                "fill_number": 1,
                "dispense_status": "dispensed",
                "quantity_dispensed": 30,
                "refills_remaining": 2,
                "dispensed_at": instant,
            },
        ),
        (
            FactKind.SHIPPED,
            {
                "fill_number": 1,
                "carrier": "USPS",
                "tracking_number": tracking_number,
                "shipped_at": instant,
            },
        ),
        (FactKind.DELIVERED, {"fill_number": 1, "handover": "delivery", "delivered_at": instant}),
        (FactKind.CANCELLED, {"cancelled_by": "system"}),
    ]


def synthetic_prescription(index: int, rng: random.Random) -> Prescription:
    """A prescription with 2 to 7 facts, spread over patients, pharmacies and statuses."""
    subject = f"drx_rx_bench_{index:07d}"
    prescription = Prescription(subject)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=index)
    steps = lifecycle_steps(str(index), f"{index % 20000:05d}", f"{index % 500:07d}", start)
    for step, (kind, fact_data) in enumerate(steps[: rng.randint(2, len(steps))]):
        prescription.record(
            Fact.read(
                f"evt_bench_{index}_{step}",
                kind,
                start + timedelta(hours=step),
                step + 1,
                fact_data,
            )
        )
    return prescription


def seed_store(
    settings: Settings, *, facts: int = 0, prescriptions: int = 0, first_index: int = 0
) -> int:
    """Synthetic prescriptions saved straight into the event store, 1,000 per `save`, until at
    least `facts` facts and `prescriptions` prescriptions are stored; the index of the next
    unused synthetic prescription."""
    rng = random.Random(first_index + 1)
    started, seeded, events, index = time.perf_counter(), 0, 0, first_index
    with bootstrap(settings) as parts:
        while seeded < facts or index - first_index < prescriptions:
            size = min(1000, prescriptions - (index - first_index)) if not facts else 1000
            batch = [synthetic_prescription(index + i, rng) for i in range(size)]
            index += len(batch)
            seeded += sum(p.fact_count for p in batch)
            events += sum(p.version for p in batch)
            parts.prescriptions.save(*batch)
    elapsed = time.perf_counter() - started
    print(
        f"seeded {index - first_index:,} prescriptions, {seeded:,} facts ({events:,} events) "
        f"in {elapsed:.0f} s: {events / elapsed:,.0f} events/s"
    )
    return index


def project(settings: Settings) -> None:
    """Bring the read models up to the store's last event, and seal it, as the service's
    projector would (so that no server measured afterwards spends its turns sealing a seed)."""
    with bootstrap(settings, batch_size=2000) as parts:
        started = time.perf_counter()
        handled = parts.projector.catch_up()
        elapsed = time.perf_counter() - started
        parts.sealer.checkpoint()
        sealed = time.perf_counter() - started - elapsed
    print(
        f"projected {handled:,} events in {elapsed:.1f} s: {handled / elapsed:,.0f} events/s;"
        f" sealed in {sealed:.1f} s"
    )


READ_KEY = "bench-key"
READ_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def migrated_store(url: str) -> tuple[Settings, dict[str, str]]:
    """A migrated store at `url`: its settings, and the environment of a `drx serve` on it
    (the benchmarks' key and webhook secret)."""
    settings = Settings(database_url=url, webhook_secrets=(READ_SECRET,), api_keys=(READ_KEY,))
    migrate(settings)
    env = {"DRX_DATABASE_URL": url, "DRX_API_KEYS": READ_KEY, "DRX_WEBHOOK_SECRETS": READ_SECRET}
    return settings, env


def seeded_read_store(url: str, prescriptions: int) -> tuple[Settings, dict[str, str]]:
    """The read benchmarks' start: a migrated store of `prescriptions` synthetic ones,
    projected and sealed; its settings, and the environment of a `drx serve` on it."""
    settings, env = migrated_store(url)
    seed_store(settings, prescriptions=prescriptions)
    project(settings)
    return settings, env


def percentiles(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return "no samples"
    cut = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {cut[49]:.1f} ms  p95 {cut[94]:.1f} ms  p99 {cut[98]:.1f} ms"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = subprocess.run(
        ["psql", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {pg}"


class ServeProcess:
    """`drx serve` in its own process group, so that a SIGKILL takes its workers too."""

    def __init__(
        self, env: dict[str, str], port: int, *args: str, module: str = "interfaces.cli"
    ) -> None:
        """`module` is what runs `serve` (`python -m MODULE serve`): the command's, or a
        benchmark's variant of it."""
        self.env = {**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.port, self.args, self.module = port, args, module
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("drx serve did not come up")

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM, as a service manager stops it (its clean-up runs), then SIGKILL if needed."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) one process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """Busy (not idle, not stolen) and stolen CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, steal = values[3] + values[4], values[7]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle - steal) / ticks, steal / ticks


class CpuMeter:
    """CPU milliseconds per delivery since it was made: of each of `pids` (a web worker, or a
    process at a lower priority: drx serve's projector and dispatcher), of every PostgreSQL
    process together, and of the whole machine (busy, and stolen by the hypervisor)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._each = {p: process_cpu_s(p) for p in pids}
        self._postgres = postgres_cpu_s()
        self._busy, self._stolen = machine_cpu_s()

    def describe(self, deliveries: int) -> str:
        ms = 1000 / max(deliveries, 1)
        busy, stolen = machine_cpu_s()
        each = {p: (process_cpu_s(p) - self._each[p]) * ms for p in self.pids}
        roles = [
            f"{'niced' if niceness(p) > 0 else 'web worker'} {cost:.3f}"
            for p, cost in sorted(each.items(), key=lambda item: -item[1])
            if cost > 0.01  # multiprocessing's resource tracker does nothing
        ]
        return (
            f"ms CPU per delivery: {', '.join(roles)}, "
            f"PostgreSQL {(postgres_cpu_s() - self._postgres) * ms:.3f}, "
            f"machine busy {(busy - self._busy) * ms:.3f} (stolen {(stolen - self._stolen) * ms:.3f})"
        )


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL process of this machine (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().startswith("postgres"):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                todo += children
    return found


# RSS and PSS in MiB, and each process's RSS by its command line.
Memory = tuple[float, float, list[tuple[str, float]]]


def memory_of(pids: list[int]) -> Memory:
    """These processes (those still there): the sum of their resident sets (RSS: pages shared
    between them, the interpreter's and the libraries', counted once in each), the sum of their
    proportional sets (PSS: each shared page divided among those that share it, so the sum is
    what the service costs the machine), and each one's RSS by its command line, in MiB."""
    rss = pss = 0
    each = []
    for process in pids:
        with contextlib.suppress(OSError):
            rollup = Path(f"/proc/{process}/smaps_rollup").read_text().splitlines()
            fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
            command = Path(f"/proc/{process}/cmdline").read_bytes().replace(b"\0", b" ")
            rss += fields["Rss"]
            pss += fields["Pss"]
            each.append((command.decode(errors="replace").strip()[-60:], fields["Rss"] / 1024))
    return rss / 1024, pss / 1024, each


def niceness(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of proc(5), counted after the command name


@contextlib.contextmanager
def commit_probe(url: str, interval_s: float = 0.05) -> Iterator[list[float]]:
    """Seconds each of a stream of one-row INSERTs took to commit, from a connection of its own
    on a table of its own, while the block runs: PostgreSQL's commit latency (the WAL flush on
    this machine's disk) beside a measurement, so that a stall of the server shows as such."""
    samples: list[float] = []
    stop = threading.Event()

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial, at text)")
            while not stop.wait(interval_s):
                started = time.perf_counter()
                conn.execute("INSERT INTO bench_commit_probe (at) VALUES ('now')")
                samples.append(time.perf_counter() - started)

    thread = threading.Thread(target=run, name="commit-probe", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def activity(url: str) -> dict[str, float]:
    """Counters that say where a stall came from, to subtract one snapshot from another:
    PostgreSQL's WAL (records, full-page images, bytes, flushes), buffers written out by the
    checkpointer, the background writer and by backends themselves (a backend that must write a
    dirty page to make room waits for it), checkpoints; this machine's CPU (busy and iowait
    jiffies) and the disk holding PostgreSQL's data, when it is local (writes and cache flushes
    completed, milliseconds spent on each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal")
        records, fpi, wal_bytes, wal_syncs = wal.fetchone() or (0, 0, 0, 0)
        bgwriter = conn.execute(
            "SELECT buffers_checkpoint, buffers_clean, buffers_backend,"
            " checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        )
        by_checkpointer, by_bgwriter, by_backends, checkpoints = bgwriter.fetchone() or (0,) * 4
        data_directory = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
    counters = {
        "wal records": float(records),
        "wal full-page images": float(fpi),
        "wal MB": float(wal_bytes) / 1e6,
        "wal flushes": float(wal_syncs),
        "buffers written by checkpointer": float(by_checkpointer),
        "buffers written by bgwriter": float(by_bgwriter),
        "buffers written by backends": float(by_backends),
        "checkpoints": float(checkpoints),
    }
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, iowait, irq, softirq = (float(v) for v in cpu[:7])
    counters["cpu busy jiffies"] = user + nice + system + irq + softirq
    counters["cpu iowait jiffies"] = iowait
    with contextlib.suppress(OSError):
        device = os.stat(data_directory).st_dev
        wanted = f"{os.major(device)} {os.minor(device)} "
        for line in Path("/proc/diskstats").read_text().splitlines():
            fields = line.split()
            if " ".join(fields[:2]) + " " == wanted:
                counters["disk writes"] = float(fields[7])
                counters["disk write ms"] = float(fields[10])
                if len(fields) >= 20:
                    counters["disk flushes"] = float(fields[18])
                    counters["disk flush ms"] = float(fields[19])
    return counters


def describe_activity(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """What happened between two `activity` snapshots, in a few lines."""
    d = {key: after[key] - before[key] for key in before if key in after}
    ticks = os.sysconf("SC_CLK_TCK") * seconds * (os.cpu_count() or 1)
    lines = [
        f"WAL {d['wal MB']:.1f} MB, {d['wal records']:,.0f} records,"
        f" {d['wal full-page images']:,.0f} full-page images, {d['wal flushes']:,.0f} flushes",
        f"buffers written by checkpointer {d['buffers written by checkpointer']:,.0f},"
        f" bgwriter {d['buffers written by bgwriter']:,.0f},"
        f" backends {d['buffers written by backends']:,.0f};"
        f" checkpoints {d['checkpoints']:.0f}",
        f"CPU busy {d['cpu busy jiffies'] / ticks:.0%}, iowait {d['cpu iowait jiffies'] / ticks:.0%}",
    ]
    if "disk writes" in d:
        writes, flushes = d["disk writes"], d.get("disk flushes", 0.0)
        line = f"disk: {writes:,.0f} writes ({d['disk write ms'] / max(writes, 1):.2f} ms each)"
        if flushes:
            line += f", {flushes:,.0f} flushes ({d['disk flush ms'] / flushes:.2f} ms each)"
        lines.append(line)
    return "\n".join(lines)
