"""`drx simulate`: a DRx stand-in. It generates realistic prescription lifecycles, signs each event
with the Standard Webhooks scheme, sends them at a target rate over many keep-alive connections,
duplicates a share, can shuffle each prescription's events, retries like DRx (back-off on any
non-2xx, honouring Retry-After), and ends by checking that the service's state of every simulated
prescription equals what its facts imply (the domain's own state function)."""

from __future__ import annotations

import http.client
import json
import queue
import random
import statistics
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.facts import Fact
from domain.state import derive_state
from interfaces.drx.signature import sign
from interfaces.drx.translator import parse_envelope, read_fact
from interfaces.progress import Progress

MAX_ATTEMPTS = 12
MAX_BACKOFF_S = 5.0
# When this many attempts in a row, from the start, were all refused the same way (a wrong
# secret: 401; a wrong URL: no answer, 404), the run stops and says why instead of retrying.
HOPELESS_AFTER = 20


class SimulationError(RuntimeError):
    """The run cannot succeed (every attempt refused the same way); the message says why."""


# Lifecycles


def _patient(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "drx_patient_id": f"drx_pt_sim_{n % 997:04d}",
        "first_name": "Sim",
        "last_name": f"Patient{n % 97}",
        "date_of_birth": f"19{rng.randint(40, 99)}-01-01",
    }


def _pharmacy(n: int) -> dict[str, Any]:
    return {"ncpdp_id": f"{n % 53:07d}", "name": f"Simulated Pharmacy {n % 53}"}


def _medication(refills: int) -> dict[str, Any]:
    return {
        "name": "Lisinopril 10 mg oral tablet",
        "quantity": 30,
        "refills_authorized": refills,
        "sig": "Take 1 tablet by mouth once daily",
    }


def _reason(category: str | None = None) -> dict[str, Any]:
    return {"text": "simulated reason", **({"category": category} if category else {})}


def lifecycle(rng: random.Random, run: str, n: int) -> list[dict[str, Any]]:
    """One prescription's events, in the order they happen: every kind of fact occurs across a
    few dozen lifecycles (fills, holds, requests and answers, cancellations, transfers, errors)."""
    subject = f"drx_rx_sim_{run}_{n:06d}"
    moment = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    events: list[dict[str, Any]] = []

    def add(kind: str, data: dict[str, Any], hours: float = 1.0) -> None:
        nonlocal moment
        moment += timedelta(hours=hours)
        events.append(
            {
                "id": f"evt_sim_{run}_{n:06d}_{len(events) + 1:02d}",
                "type": f"drx.prescription.{kind}",
                "schema_version": "1.0",
                "source": "drx:h2h/account/acct_sim",
                "occurred_at": moment.isoformat(),
                "subject": subject,
                "sequence": len(events) + 1,
                "correlation": {"prescription_id": subject},
                "data": data,
            }
        )

    refills = rng.randint(0, 3)
    add(
        "received",
        {
            "patient": _patient(rng, n),
            "prescriber": {"npi": "1234567893"},
            "pharmacy": _pharmacy(n),
            "medication": _medication(refills),
            "written_on": moment.date().isoformat(),
        },
    )
    if rng.random() < 0.1:
        add("rejected", {"reason": _reason("transmission_error"), "retryable": True}, 0.1)
    if rng.random() < 0.05:
        add("rejected", {"reason": _reason("validation"), "retryable": False}, 0.1)
        return events
    add("sent", {"transmission": {"status": "sent"}}, 0.1)
    if rng.random() < 0.15:
        add("updated", {"notes": "simulated note", "pharmacy": _pharmacy(n + 1)})
    if rng.random() < 0.2:
        request = f"chg_{n}"
        add(
            "change_requested",
            {
                "request_id": request,
                "change_type": "OS",
                "requested_medications": [{"name": "Lisinopril 20 mg"}],
            },
        )
        if rng.random() < 0.6:
            add(
                "change_approved",
                {
                    "request_id": request,
                    "outcome": "approved_with_changes",
                    "approved_medication": _medication(refills),
                },
            )
        else:
            add("change_denied", {"request_id": request, "reason": _reason()})
    if rng.random() < 0.1:
        request = f"cxl_{n}"
        add("cancel_requested", {"request_id": request, "requested_by": "prescriber"})
        if rng.random() < 0.7:
            add("cancelled", {"request_id": request, "cancelled_by": "prescriber"})
            return events
        add("cancel_denied", {"request_id": request, "reason": _reason()})
    if rng.random() < 0.05:
        add("transferred", {"to_pharmacy": _pharmacy(n + 7), "transferred_at": moment.isoformat()})
        return events
    remaining = refills
    for fill in range(1, rng.randint(1, refills + 1) + 1):
        add("processing", {"fill_number": fill, "stage": "filling"}, 24.0 * (fill > 1) + 1)
        if rng.random() < 0.15:
            add("on_hold", {"fill_number": fill, "reason": _reason("insurance")})
            add("processing", {"fill_number": fill, "stage": "billing"})
        remaining = max(remaining - (fill > 1), 0)
        add(
            "dispensed",
            {
                "fill_number": fill,
                "dispense_status": "dispensed",
                "quantity_dispensed": 30,
                "refills_remaining": remaining,
                "dispensed_at": moment.isoformat(),
            },
        )
        if rng.random() < 0.5:
            add(
                "shipped",
                {
                    "fill_number": fill,
                    "carrier": "USPS",
                    "tracking_number": f"94{n}{fill}",
                    "shipped_at": moment.isoformat(),
                },
            )
            handover = "delivery"
        else:
            add("ready_for_pickup", {"fill_number": fill, "ready_at": moment.isoformat()})
            handover = "pickup"
        add(
            "delivered",
            {"fill_number": fill, "handover": handover, "delivered_at": moment.isoformat()},
        )
    if rng.random() < 0.2:
        request = f"ren_{n}"
        add("renewal_requested", {"request_id": request, "requested_refills": 2}, 24 * 20)
        if rng.random() < 0.7:
            add(
                "renewal_approved",
                {"request_id": request, "outcome": "approved", "refills_authorized": 2},
            )
        else:
            add("renewal_denied", {"request_id": request, "reason": _reason()})
    return events


def expected_state(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the facts imply, by the domain's own pure state function."""
    facts: list[Fact] = []
    for event in events:
        body = json.dumps(event).encode()
        fact = read_fact(parse_envelope(body), body)
        assert isinstance(fact, Fact), fact
        facts.append(fact)
    return derive_state(events[0]["subject"], facts).as_dict()


# Sending


@dataclass
class Tally:
    sent: int = 0
    attempts: int = 0
    retried: int = 0
    gave_up: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    refused: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hopeless: str | None = None  # why the run stopped early

    def judge(self, url: str) -> None:
        """Stop the run when nothing has been acknowledged and every refusal was the same."""
        if self.sent or self.attempts < HOPELESS_AFTER or len(self.refused) != 1:
            return
        (status,) = self.refused
        self.hopeless = {
            0: f"nothing answers at {url}: is drx serve running there?",
            401: "every delivery was refused as unsigned (401): the secret is not one of the "
            "service's DRX_WEBHOOK_SECRETS (pass --secret, or run in the service's directory)",
            404: f"{url} is not the webhook (404): it is .../webhooks/drx",
        }.get(status)


def describe_refusals(refused: Counter[int]) -> str:
    """`3 no answer, 48 503 (store unavailable)`: what refused the attempts, for a person."""
    names = {0: "no answer", 401: "unsigned", 413: "too large", 422: "bad envelope"}
    names |= {429: "slow down", 503: "store unavailable"}
    described = []
    for status, count in sorted(refused.items()):
        label = names.get(status, "refused")
        described.append(f"{count:,} {label}" if not status else f"{count:,} {status} ({label})")
    return ", ".join(described) or "none"


class RateLimiter:
    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next_at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            self.next_at = max(self.next_at + self.interval, now)
            delay = self.next_at - now - self.interval
        if delay > 0:
            time.sleep(delay)


class Sender:
    def __init__(self, url: str, secret: str, tally: Tally, limiter: RateLimiter) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = (
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            parts.path,
        )
        self.url, self.secret, self.tally, self.limiter = url, secret, tally, limiter
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return conn

    def post(self, body: bytes, message_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign(self.secret, message_id, now, body),
        }
        try:
            conn = self._connection()
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read()
            answer = json.loads(text) if text else {}
            return response.status, answer, dict(response.getheaders())
        except (OSError, http.client.HTTPException, ValueError):
            self.local.conn = None
            return 0, {}, {}

    def deliver(self, event: dict[str, Any]) -> None:
        """One event, retried like DRx until a 2xx: each attempt freshly timestamped."""
        body, message_id, backoff = json.dumps(event).encode(), f"msg_{uuid.uuid4().hex}", 0.1
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self.tally.hopeless:
                return
            self.limiter.wait()
            started = time.perf_counter()
            status, answer, headers = self.post(body, message_id)
            elapsed = time.perf_counter() - started
            with self.tally.lock:
                self.tally.attempts += 1
                self.tally.latencies.append(elapsed)
                if 200 <= status < 300:
                    self.tally.sent += 1
                    outcome = answer.get("status", "?")
                    self.tally.outcomes["parked" if answer.get("parked") else outcome] += 1
                    return
                self.tally.refused[status] += 1
                self.tally.judge(self.url)
                if attempt == 1:
                    self.tally.retried += 1
            retry_after = headers.get("retry-after") or headers.get("Retry-After")
            pause = float(retry_after) if retry_after and retry_after.isdigit() else backoff
            time.sleep(min(pause, MAX_BACKOFF_S))
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        with self.tally.lock:
            self.tally.gave_up += 1


def percentiles(samples: list[float]) -> str:
    if len(samples) < 2:
        return "too few samples"
    cut = statistics.quantiles([s * 1000 for s in samples], n=100, method="inclusive")
    return f"p50 {cut[49]:.1f} ms, p95 {cut[94]:.1f} ms, p99 {cut[98]:.1f} ms"


@dataclass
class Plan:
    lifecycles: dict[str, list[dict[str, Any]]]
    sends: list[dict[str, Any]]


def plan(prescriptions: int, duplicates: float, shuffle: bool, seed: int | None) -> Plan:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6] if seed is None else f"s{seed}"
    lifecycles = {}
    for n in range(prescriptions):
        events = lifecycle(rng, run, n)
        lifecycles[events[0]["subject"]] = events
    streams = []
    for events in lifecycles.values():
        stream = list(events) + [e for e in events if rng.random() < duplicates]
        if shuffle:
            rng.shuffle(stream)
        streams.append(stream)
    # Prescriptions interleave, as they do at DRx; each keeps its own (possibly shuffled) order.
    sends: list[dict[str, Any]] = []
    while streams:
        stream = streams[rng.randrange(len(streams))]
        sends.append(stream.pop(0))
        streams = [s for s in streams if s]
    return Plan(lifecycles, sends)


def check_states(
    base_url: str, api_key: str, lifecycles: dict[str, list[dict[str, Any]]], timeout_s: float = 120
) -> tuple[int, list[str]]:
    """Wait for the read models to catch up, then compare every simulated prescription."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    auth = {"Authorization": f"Bearer {api_key}"}

    def get(path: str) -> tuple[int, Any]:
        conn.request("GET", path, headers=auth)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, projections = get("/projections")
        if status == 401:
            raise SimulationError(
                "the read API refused the API key (401), so the final states were not checked: "
                "pass --api-key with one of the server's DRX_API_KEYS"
            )
        if status == 200 and all(p["lag"] == 0 for p in projections):
            break
        time.sleep(0.2)
    mismatches = []
    for subject, events in lifecycles.items():
        status, state = get(f"/prescriptions/{urllib.parse.quote(subject)}")
        if status != 200 or state != expected_state(events):
            mismatches.append(subject)
    return len(lifecycles) - len(mismatches), mismatches


def simulate(
    url: str,
    secret: str,
    api_key: str | None,
    prescriptions: int,
    rate: float | None,
    duplicates: float,
    shuffle: bool,
    connections: int = 32,
    seed: int | None = None,
) -> int:
    planned = plan(prescriptions, duplicates, shuffle, seed)
    total = len(planned.sends)
    print(
        f"simulating {prescriptions} prescriptions: {total} deliveries "
        f"({total - sum(map(len, planned.lifecycles.values()))} duplicates), "
        f"{'at ' + str(rate) + '/s' if rate else 'as fast as possible'}, {connections} connections"
    )
    tally, progress = Tally(), Progress("simulate")
    sender = Sender(url, secret, tally, RateLimiter(rate))
    work: queue.Queue[dict[str, Any] | None] = queue.Queue()
    for event in planned.sends:
        work.put(event)
    done = [0]

    def worker() -> None:
        while (event := work.get()) is not None and not tally.hopeless:
            sender.deliver(event)
            with tally.lock:
                done[0] += 1
                finished = done[0]
            progress(finished, total)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        work.put(None)
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if tally.hopeless:
        raise SimulationError(tally.hopeless)
    outcomes = ", ".join(f"{n:,} {name}" for name, n in sorted(tally.outcomes.items()))
    print(
        f"sent {tally.sent:,} of {total:,} in {elapsed:.1f} s ({tally.sent / elapsed:,.0f}/s): "
        f"{outcomes or 'none acknowledged'}; {tally.retried:,} retried, {tally.gave_up:,} given "
        f"up; refusals on the way: {describe_refusals(tally.refused)}"
    )
    print(f"acknowledgement latency over {tally.attempts} attempts: {percentiles(tally.latencies)}")
    if tally.gave_up:
        return 1
    if not api_key:
        print("no API key (--api-key or DRX_API_KEYS): the final states were not checked")
        return 0
    base = url.split("/webhooks/", 1)[0]
    equal, mismatches = check_states(base, api_key, planned.lifecycles)
    print(
        f"state check: {equal} of {len(planned.lifecycles)} prescriptions equal what their "
        f"facts imply" + (f"; differing: {', '.join(mismatches[:10])}" if mismatches else "")
    )
    return 1 if mismatches else 0
