"""Read API benchmark on PostgreSQL at scale: `GET /prescriptions/{id}` and each list filter,
with the plans of the read table's queries checked first.

    python bench/read_api.py [--prescriptions 1000000] [--seconds 10] [--workers 2]
                             [--connections 8] [--keep] [--only detail,status,...] [--root DIR]

**Seeding.** Straight into `rx_prescriptions` with COPY, not through the store: the rows are
exactly those the projector writes (`PrescriptionsModel`'s own row, from `derive_state` over
synthetic facts), in seven shapes (2 to 7 facts of a received-to-cancelled lifecycle, and one
with a fact after its cancellation, so `needs_review`), each derived once with placeholder ids
that every row then fills in (its prescription, patient, pharmacy, tracking number and event
ids). A sample of rows is derived in full and compared with the filled-in ones before the load.
`updated_at` (when the last fact was recorded) is spread at random over a year, independent of
the id, as DRx's random ids are of time, and the rows are written in its order, as a live
table's lie (each fact writes its row anew, mostly at the end): a page of the list by id reads
its rows from all over the table. The event store stays empty: the read paths measured read
only the read table. Then `VACUUM ANALYZE`, as operations.md asks after a bulk load on a
server with autovacuum off (about a minute in all for a million). `--keep` keeps the database
(`rd_read_api_N`) for the next run, which reuses it when it holds the same rows (then only
migrates and `ANALYZE`s it).

**Plans.** Every query the server runs for the measured paths (the server's own statements,
`infrastructure/queries.py`, with three of each workload's parameters) is explained (`EXPLAIN
(ANALYZE, FORMAT JSON)`), as planned for its values and, for a statement the server may prepare,
as the generic plan PostgreSQL may switch to (forced: `plan_cache_mode = force_generic_plan`);
a Gather, a Gather Merge or a Seq Scan on a read table is NOT MET.

**Load.** `drx serve --workers N` (2 by default, on this machine's 2 cores) driven by `wrk` (one
thread, keep-alive connections, a Lua script that picks each path at random from a file of
them), each workload in turn: detail, then each list filter at the default page size, alone and
after a cursor deep in its set; the rate, p50 and p99 beside the goals (detail at least 3,000/s;
each list's p99 under 20 ms), then, with no goal, larger pages and the costliest updated_since.
Every answer must be a 200. The ceilings, measured the same way: `GET /health` of the same
server (Litestar's routing, no key, no database) and a raw ASGI answer on uvicorn with the
service's options and worker count (`bench/trivial_app.py:raw`). `--root DIR` serves another
checkout instead (the code before) on a database kept before, not migrated by this script.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.common import ADMIN_URL, READ_SECRET, ServeProcess, lifecycle_steps, machine
from bench.common import READ_KEY as KEY
from domain.facts import Fact, FactKind
from domain.ids import prescription_id as aggregate_id_of
from domain.instants import sortable_instant
from domain.state import derive_state
from infrastructure.migrations import migrate
from infrastructure.queries import (
    PrescriptionFilter,
    Statement,
    prescription_statement,
    prescriptions_statement,
)
from infrastructure.read_models import Folded, PrescriptionsModel
from infrastructure.read_tables import PRESCRIPTIONS, TABLES
from infrastructure.settings import Settings

GOAL_DETAIL_RATE = 3000.0
GOAL_LIST_P99_MS = 20.0
SEED_FORMAT = 2  # a kept database seeded in another format is seeded again
PHARMACIES = 500
PER_PATIENT = 5  # prescriptions per patient
UPDATED_FROM = datetime(2025, 1, 1, tzinfo=UTC)
UPDATED_SPAN_S = 365 * 24 * 3600
READ_TABLES = frozenset(table.name for tables in TABLES.values() for table in tables)


def drive(
    port: int,
    paths: list[str],
    seconds: float,
    clients: int,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[float]]:
    """GETs of `paths` (picked at random) from client threads; with the API key by default.
    (The other read benchmarks' driver: bench/access_log.py, console.py, fhir.py.)"""
    sent = headers if headers is not None else {"Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request("GET", rng.choice(paths), headers=sent)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), latencies


# --- seeding ------------------------------------------------------------------------------

# Placeholders each row fills in: letters only, so that JSON and COPY leave them as they are.
_INDEX, _PATIENT, _PHARMACY = "QQIXQQ", "QQPTQQ", "QQPHQQ"
_START = datetime(2025, 1, 1, tzinfo=UTC)


def _steps(index: str, patient: str, pharmacy: str) -> list[tuple[FactKind, dict[str, Any]]]:
    """The lifecycle the shapes cut (bench/common.py's synthetic prescriptions')."""
    return lifecycle_steps(index, patient, pharmacy, _START)


# (facts of the lifecycle kept, whether a shipment comes after them); a shape is picked per
# row, the last one (a fact after the cancellation: an anomaly, needs_review) for 2% of them.
SHAPES = ((2, False), (3, False), (4, False), (5, False), (6, False), (7, False), (3, True))


def shape_facts(shape: int, index: str, patient: str, pharmacy: str) -> list[Fact]:
    count, late_shipment = SHAPES[shape]
    steps = _steps(index, patient, pharmacy)
    kept = steps[:count]
    if late_shipment:
        kept = [*kept[:2], steps[6], steps[4]]  # received, sent, cancelled, then shipped
    return [
        Fact.read(f"evt_bench_{index}_{step}", kind, _START + timedelta(hours=step), step + 1, data)
        for step, (kind, data) in enumerate(kept)
    ]


def projected_row(shape: int, index: str, patient: str, pharmacy: str, updated_at: str) -> tuple:
    """The row the projector writes for the shape's facts (its own `row`)."""
    subject = f"drx_rx_bench_{index}"
    facts = shape_facts(shape, index, patient, pharmacy)
    folded = Folded(
        subject,
        derive_state(subject, facts),
        max(f.order_key() for f in facts),
        updated_at,
    )
    model = PrescriptionsModel("postgresql", history=lambda *_: [])
    return model.row(aggregate_id_of(subject), folded)


class Rows:
    """The seeded rows: the shapes' rows derived once with placeholders, then filled in."""

    def __init__(self, count: int, seed: int = 7) -> None:
        self.count, self.seed = count, seed
        self.patients = max(1, count // PER_PATIENT)
        self.templates = [
            projected_row(shape, _INDEX, _PATIENT, _PHARMACY, "") for shape in range(len(SHAPES))
        ]

    def params(self, index: int, rng: random.Random) -> tuple[int, str, str, str, str]:
        shape = len(SHAPES) - 1 if rng.random() < 0.02 else rng.randrange(len(SHAPES) - 1)
        updated = UPDATED_FROM + timedelta(seconds=rng.uniform(0, UPDATED_SPAN_S))
        return (
            shape,
            f"{index:07d}",
            f"{index % self.patients:06d}",
            f"{index % PHARMACIES:07d}",
            sortable_instant(updated),
        )

    def __iter__(self) -> Iterator[tuple]:
        """The rows in the order of their updated_at, as a live table's rows lie: a row is
        written anew at each fact, where there is room, mostly at the table's end; and DRx's
        ids are random, so a page of the list by id reads rows from all over the table."""
        rng = random.Random(self.seed)
        params = [self.params(index, rng) for index in range(self.count)]
        params.sort(key=lambda p: p[4])
        for found in params:
            yield self.fill(*found)

    def fill(self, shape: int, index: str, patient: str, pharmacy: str, updated_at: str) -> tuple:
        _aggregate, subject, status, _patient, _pharmacy, review, _updated, state, fold = (
            self.templates[shape]
        )
        subject = subject.replace(_INDEX, index)

        def filled(text: str) -> str:
            return (
                text.replace(_INDEX, index).replace(_PATIENT, patient).replace(_PHARMACY, pharmacy)
            )

        return (
            aggregate_id_of(subject),
            subject,
            status,
            f"drx_pt_{patient}",
            pharmacy,
            review,
            updated_at,
            filled(state),
            filled(fold),
        )

    def verify(self, samples: int = 200) -> None:
        """Rows derived in full equal the filled-in ones (else the seeding is wrong)."""
        rng = random.Random(self.seed)
        chosen = set(random.Random(1).sample(range(self.count), min(samples, self.count)))
        for index in range(self.count):
            params = self.params(index, rng)
            if index in chosen and self.fill(*params) != projected_row(*params):
                raise AssertionError(f"the seeded row {index} is not the projector's")


def database_url(name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    host, port = info.get("host") or "127.0.0.1", info.get("port") or 5432
    return f"postgresql://{info.get('user') or 'postgres'}@{host}:{port}/{name}"


def _seeded(url: str, count: int) -> bool:
    """Whether the database holds this run's rows (a kept one from an earlier run)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            found = conn.execute("SELECT format, prescriptions FROM bench_seed").fetchone()
    except psycopg.Error:
        return False
    return found == (SEED_FORMAT, count)


def seed(url: str, settings: Settings, count: int) -> None:
    rows = Rows(count)
    rows.verify()
    migrate(settings)
    started = time.perf_counter()
    names = sql.SQL(", ").join(sql.Identifier(name) for name in PRESCRIPTIONS.names)
    with psycopg.connect(url) as conn:
        with conn.cursor() as cursor:
            copy_sql = sql.SQL("COPY rx_prescriptions ({}) FROM STDIN").format(names)
            with cursor.copy(copy_sql) as copying:
                for row in rows:
                    copying.write_row(row)
            cursor.execute("CREATE TABLE bench_seed (format int, prescriptions int)")
            cursor.execute("INSERT INTO bench_seed VALUES (%s, %s)", (SEED_FORMAT, count))
        conn.commit()
    copied = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE rx_prescriptions")
    print(
        f"seeded {count:,} prescriptions by COPY in {copied:.0f} s, then VACUUM ANALYZE in "
        f"{time.perf_counter() - started - copied:.0f} s"
    )


@contextlib.contextmanager
def seeded_database(
    count: int, keep: bool, migrated: bool = True
) -> Iterator[tuple[str, Settings]]:
    """The database of `count` seeded prescriptions; kept afterwards with `keep`. A kept one
    is migrated to this checkout's tables unless not `migrated` (when another checkout is
    served: its `drx serve` migrates it as it would)."""
    name = f"rd_read_api_{count}" if keep else f"rd_read_api_{os.getpid()}"
    url = database_url(name)
    settings = Settings(database_url=url, webhook_secrets=(READ_SECRET,), api_keys=(KEY,))
    reused = keep and _seeded(url, count)
    if not reused:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        if reused:
            print(f"reusing the database {name} ({count:,} prescriptions, seeded before)")
            if migrated:
                migrate(settings)  # a migration added since
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE rx_prescriptions")
        else:
            seed(url, settings, count)
        yield url, settings
    finally:
        if not keep:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


# --- workloads ----------------------------------------------------------------------------


@dataclasses.dataclass
class Request:
    path: str
    detail: str | None = None  # the prescription id of a detail read
    where: PrescriptionFilter = dataclasses.field(default_factory=PrescriptionFilter)
    limit: int = 50
    cursor: str | None = None


@dataclasses.dataclass
class Workload:
    name: str
    requests: list[Request]
    kind: str = "list"  # "detail": the goal is on the rate; "list": on the p99; "info": none


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(where: PrescriptionFilter, limit: int = 50, cursor: str | None = None) -> Request:
    query: list[tuple[str, str]] = []
    for name in ("status", "patient_id", "pharmacy_ncpdp_id"):
        if getattr(where, name) is not None:
            query.append((name, getattr(where, name)))
    if where.needs_review is not None:
        query.append(("needs_review", "true" if where.needs_review else "false"))
    if where.updated_since is not None:
        query.append(("updated_since", _instant(where.updated_since)))
    query.append(("limit", str(limit)))
    if cursor is not None:
        query.append(("cursor", cursor))
    return Request(f"/prescriptions?{urllib.parse.urlencode(query)}", None, where, limit, cursor)


def workloads(count: int, rows: Rows) -> list[Workload]:
    """Detail, then each list filter at the default page size, alone and after a cursor deep
    in its set; then, with no goal, larger pages and the hardest updated_since."""
    rng = random.Random(2)
    ids = [f"drx_rx_bench_{rng.randrange(count):07d}" for _ in range(20_000)]
    end = UPDATED_FROM + timedelta(seconds=UPDATED_SPAN_S)
    day = 86400.0

    def since(nearest_days: float, farthest_days: float) -> datetime:
        return end - timedelta(seconds=rng.uniform(nearest_days * day, farthest_days * day))

    def patient() -> str:
        return f"drx_pt_{rng.randrange(rows.patients):06d}"

    def pharmacy() -> str:
        return f"{rng.randrange(PHARMACIES):07d}"

    n, f = 2000, PrescriptionFilter
    per_day = count / (UPDATED_SPAN_S / day)
    recent = f"updated_since in the last day (0-{per_day:,.0f} rows)"
    month = f"updated_since 3-30 days ago ({3 * per_day:,.0f}-{30 * per_day:,.0f} rows)"
    crossover = f"updated_since 1-3 days ago ({per_day:,.0f}-{3 * per_day:,.0f} rows)"
    return [
        Workload("detail", [Request(f"/prescriptions/{i}", i) for i in ids], "detail"),
        Workload("no filter", [_list(f())]),
        Workload("no filter, a cursor", [_list(f(), 50, i) for i in ids[:n]]),
        Workload("status=shipped", [_list(f(status="shipped"))]),
        Workload("status=shipped, a cursor", [_list(f(status="shipped"), 50, i) for i in ids[:n]]),
        Workload("patient_id", [_list(f(patient_id=patient())) for _ in range(n)]),
        Workload("pharmacy_ncpdp_id", [_list(f(pharmacy_ncpdp_id=pharmacy())) for _ in range(n)]),
        Workload(
            "pharmacy_ncpdp_id, a cursor",
            [_list(f(pharmacy_ncpdp_id=pharmacy()), 50, i) for i in ids[:n]],
        ),
        Workload("needs_review=true", [_list(f(needs_review=True))]),
        Workload(
            "needs_review=true, a cursor", [_list(f(needs_review=True), 50, i) for i in ids[:n]]
        ),
        Workload("needs_review=false", [_list(f(needs_review=False))]),
        Workload(recent, [_list(f(updated_since=since(0, 1))) for _ in range(n)]),
        Workload(month, [_list(f(updated_since=since(3, 30))) for _ in range(n)]),
        Workload(
            "updated_since 3-30 days ago, a cursor",
            [_list(f(updated_since=since(3, 30)), 50, i) for i in ids[:n]],
        ),
        # No goal: pages larger than the default, and the updated_since whose plans cost the
        # most (where reading the ids from the updated_at index and walking the id index cost
        # the same).
        Workload(
            "pharmacy_ncpdp_id, limit=100",
            [_list(f(pharmacy_ncpdp_id=pharmacy()), 100) for _ in range(n)],
            "info",
        ),
        Workload("no filter, limit=500, a cursor", [_list(f(), 500, i) for i in ids[:n]], "info"),
        Workload(crossover, [_list(f(updated_since=since(1, 3))) for _ in range(n)], "info"),
        Workload(
            "status=shipped&updated_since 3-30 days ago",
            [_list(f(status="shipped", updated_since=since(3, 30))) for _ in range(n)],
            "info",
        ),
    ]


# --- plans --------------------------------------------------------------------------------


def statements(request: Request) -> list[Statement]:
    """What the server runs for this request: its own statements (infrastructure/queries.py),
    with the request's values."""
    if request.detail is not None:
        return [prescription_statement(request.detail)]
    return [prescriptions_statement("postgresql", request.where, request.limit, request.cursor)]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _faults(plan: dict[str, Any]) -> list[str]:
    found = []
    for node in _nodes(plan):
        kind = node["Node Type"]
        if kind in ("Gather", "Gather Merge"):
            found.append(kind)
        if kind == "Seq Scan" and node.get("Relation Name") in READ_TABLES:
            found.append(f"Seq Scan on {node['Relation Name']}")
    return found


def _shape(plan: dict[str, Any]) -> str:
    parts = []
    for node in _nodes(plan):
        kind = node["Node Type"]
        if node.get("Index Name"):
            kind += f" {node['Index Name']}"
        parts.append(kind)
    return " > ".join(parts)


def explain(
    conn: psycopg.Connection[Any], text: str, params: tuple[Any, ...], generic: bool
) -> dict[str, Any]:
    """The plan (executed: ANALYZE) for these values, or the generic plan of the prepared
    statement (`plan_cache_mode = force_generic_plan`, PostgreSQL 15 has no GENERIC_PLAN)."""
    if not generic:
        row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {text}", params).fetchone()
        return row[0][0]  # type: ignore[index,no-any-return]
    numbered = text
    for number in range(1, len(params) + 1):
        numbered = numbered.replace("%s", f"${number}", 1)
    values = sql.SQL(", ").join(sql.Literal(p) for p in params)
    conn.execute(f"PREPARE bench_plan AS {numbered}")
    try:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        row = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE bench_plan ({})").format(values)
        ).fetchone()
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE bench_plan")
    return row[0][0]  # type: ignore[index,no-any-return]


def check_plans(url: str, loads: list[Workload]) -> bool:
    """Each workload's statements for a few of its requests: the plan for their values and,
    for a statement the server may prepare, the generic one. True when every plan holds."""
    held = True
    print(
        "plans of the read table's queries (for their values; 'generic': the prepared "
        "statement's generic plan), the slowest run of each plan:"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for load in loads:
            shapes: dict[str, tuple[list[str], float]] = {}
            for request in load.requests[:3]:
                for statement in statements(request):
                    prepared = statement.prepare is not False
                    for generic in (False, True) if prepared else (False,):
                        found = explain(conn, statement.sql, statement.params, generic)
                        plan = found["Plan"]
                        label = ("generic: " if generic else "") + _shape(plan)
                        faults = _faults(plan)
                        worst = max(shapes.get(label, ([], 0.0))[1], found["Execution Time"])
                        shapes[label] = (faults, worst)
            for label, (faults, worst) in shapes.items():
                verdict = "NOT MET: " + ", ".join(faults) if faults else "met"
                held = held and not faults
                print(f"  {load.name:<44} {verdict:<8} {worst:7.2f} ms  {label}")
    return held


# --- load ---------------------------------------------------------------------------------

_LUA = """
local paths = {}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(tonumber(args[2]))
end
request = function()
  return wrk.format("GET", paths[math.random(#paths)], wrk.headers)
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


@dataclasses.dataclass
class Measured:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]


def run_wrk(
    port: int, paths: list[str], seconds: float, connections: int, folder: Path, key: bool = True
) -> Measured:
    script, listed = folder / "paths.lua", folder / "paths.txt"
    script.write_text(_LUA)
    listed.write_text("\n".join(paths) + "\n")
    header = ["-H", f"Authorization: Bearer {KEY}"] if key else []
    done = subprocess.run(
        [
            "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s", *header,
            "-s", str(script), f"http://127.0.0.1:{port}", "--", str(listed), "1",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    errors = {
        k: figures[k] for k in ("status", "connect", "read", "write", "timeout") if figures[k]
    }
    return Measured(
        figures["requests"] / (figures["duration_us"] / 1e6),
        figures["p50_us"] / 1000,
        figures["p99_us"] / 1000,
        errors,
    )


def check_answers(port: int, loads: list[Workload]) -> None:
    """A few answers of each workload, before the load: 200 and the JSON of the contract."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for load in loads:
        for request in load.requests[:3]:
            conn.request("GET", request.path, headers={"Authorization": f"Bearer {KEY}"})
            answer = conn.getresponse()
            body = json.loads(answer.read())
            assert answer.status == 200, (request.path, answer.status, body)
            if request.detail is not None:
                assert body["prescription_id"] == request.detail, body
            else:
                assert set(body) == {"items", "next_cursor"}, body.keys()


def uvicorn_raw(workers: int, port: int) -> subprocess.Popen[bytes]:
    """The stack's ceiling: bench/trivial_app.py's raw ASGI answer on uvicorn, with the
    service's options (its protocol, uvloop, no access log) and worker count."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "bench.trivial_app:raw", "--port", str(port),
            "--workers", str(workers), "--http", "interfaces.server:BoundedHttpToolsProtocol",
            "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        ],
        env={**os.environ, "PYTHONPATH": str(root)},
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/")
            return process
        time.sleep(0.1)
    raise RuntimeError("uvicorn did not come up")


def verdict(load: Workload, measured: Measured) -> str:
    if measured.errors:
        return "not met (errors)"
    if load.kind == "detail":
        return "met" if measured.rate >= GOAL_DETAIL_RATE else "not met"
    if load.kind == "list":
        return "met" if measured.p99_ms < GOAL_LIST_P99_MS else "not met"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prescriptions", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database, reuse it")
    parser.add_argument("--only", default="", help="comma-separated workload names (prefixes)")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument(
        "--root",
        help="serve another checkout (the code before, say: git worktree add ../old <commit>),"
        " on a database kept before (--keep), not migrated to this checkout's tables; the plans"
        " checked are still this checkout's queries",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    if args.root and not args.keep:
        sys.exit("--root serves a database kept before: give --keep")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    count = args.prescriptions
    with (
        seeded_database(count, args.keep, migrated=not args.root) as (url, _settings),
        tempfile.TemporaryDirectory() as tmp,
    ):
        loads = workloads(count, Rows(count))
        if args.only:
            wanted = [w.strip() for w in args.only.split(",")]
            loads = [w for w in loads if any(w.name.startswith(p) for p in wanted)]
        plans_held = check_plans(url, loads) if not args.root else None
        env = {"DRX_DATABASE_URL": url, "DRX_API_KEYS": KEY, "DRX_WEBHOOK_SECRETS": READ_SECRET}
        port = 18765
        server = ServeProcess(env, port, "--workers", str(args.workers))
        served = Path(args.root or Path(__file__).resolve().parents[1]).resolve()
        server.env["PYTHONPATH"] = str(served)
        print(f"serving {served}")
        here = Path.cwd()
        os.chdir(served)  # `python -m` puts the working directory first on the path
        try:
            server.start(timeout_s=120)
        finally:
            os.chdir(here)
        folder = Path(tmp)
        results: list[tuple[str, Measured, str]] = []
        try:
            check_answers(port, loads)
            print(
                f"drx serve --workers {args.workers}; wrk: 1 thread, {args.connections} "
                f"connections, {args.seconds:.0f} s a workload after {args.warmup:.0f} s of warm-up; "
                f"{count:,} prescriptions; load average {os.getloadavg()[0]:.1f}"
            )
            for load in loads:
                paths = [r.path for r in load.requests]
                if args.warmup:
                    run_wrk(port, paths, args.warmup, args.connections, folder)
                measured = run_wrk(port, paths, args.seconds, args.connections, folder)
                results.append((load.name, measured, verdict(load, measured)))
                _print(load.name, measured, verdict(load, measured), load.kind)
            if not args.no_ceilings:
                health = run_wrk(
                    port, ["/health"], args.seconds, args.connections, folder, key=False
                )
                _print("ceiling: GET /health, same server", health, "", "ceiling")
        finally:
            server.kill()
        if not args.no_ceilings:
            raw = uvicorn_raw(args.workers, port + 1)
            try:
                measured = run_wrk(
                    port + 1, ["/"], args.seconds, args.connections, folder, key=False
                )
                _print("ceiling: raw ASGI on uvicorn", measured, "", "ceiling")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(raw.pid, 9)
                raw.wait()
        print(f"ended {datetime.now(UTC):%H:%M} UTC; load average {os.getloadavg()[0]:.1f}")
        print("plans: " + {True: "met", False: "NOT MET", None: "not checked"}[plans_held])
        if plans_held is False or any(v.startswith("not met") for _, _, v in results):
            sys.exit(1)


def _print(name: str, measured: Measured, verdict_: str, kind: str) -> None:
    goal = {
        "detail": f"goal >= {GOAL_DETAIL_RATE:,.0f}/s",
        "list": f"goal p99 < {GOAL_LIST_P99_MS:.0f} ms",
    }.get(kind, "")
    errors = f"  errors {measured.errors}" if measured.errors else ""
    print(
        f"  {name:<44} {measured.rate:>8,.0f}/s  p50 {measured.p50_ms:6.2f} ms  "
        f"p99 {measured.p99_ms:6.2f} ms  {goal:<20} {verdict_:<8} "
        f"(load {os.getloadavg()[0]:.1f}){errors}"
    )


if __name__ == "__main__":
    main()
