"""The fast path of POST /webhooks/drx (interfaces/http/fast_webhook.py) against the framework's
own handler: the same requests sent to two servers, one with the fast path and one without, get
the same answers (status, headers, body), leave the same deliveries and states, and count the
same outcomes in the metrics; and only the stored deliveries' answers are the fast path's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from infrastructure.migrations import migrate
from infrastructure.settings import Settings
from interfaces.drx import signature
from interfaces.http.webhooks import MAX_BODY_BYTES
from tests.conftest import migrated_postgres, sqlite_settings
from tests.helpers import (
    AUTH,
    EXAMPLES,
    body_of,
    load_example,
    metric,
    new_secret,
    settle,
    signed_headers,
)

SECRET = new_secret()


def _request(body: bytes, **changes: Any) -> dict[str, Any]:
    """A signed request, then `changes` to its headers (None: left out)."""
    headers: dict[str, Any] = {**signed_headers(body, SECRET), **changes}
    return {"content": body, "headers": {k: v for k, v in headers.items() if v is not None}}


def _example(name: str, **changes: Any) -> dict[str, Any]:
    return {**load_example(name), **changes}


def requests() -> list[tuple[str, dict[str, Any], bool]]:
    """(what it is, the request, whether the fast path answers it)."""
    received, shipped = _example("received"), _example("shipped")
    unknown = _example("shipped", id="evt_unknown_type", type="drx.prescription.teleported")
    broken = {k: v for k, v in _example("shipped", id="evt_broken").items() if k != "subject"}
    body = body_of(received)
    return [
        *((path.stem, _request(path.read_bytes()), True) for path in EXAMPLES),
        ("duplicate", _request(body), True),
        ("a retry", _request(body_of({**received, "attempt": 9})), True),
        ("conflict", _request(body_of({**received, "occurred_at": "2025-01-01T00:00:00Z"})), True),
        ("unknown type: parked", _request(body_of(unknown)), False),
        ("broken envelope", _request(body_of(broken)), False),
        ("not JSON", _request(b"{not json"), False),
        ("a JSON list", _request(b"[]"), False),
        ("wrong signature", _request(body, **{"webhook-signature": "v1,AAAA"}), False),
        ("no signature", _request(body, **{"webhook-signature": None}), False),
        ("stale", _request(body, **{"webhook-timestamp": "1000000000"}), False),
        ("text/plain", _request(body, **{"content-type": "text/plain"}), False),
        ("no content type", _request(body, **{"content-type": None}), False),
        ("over 1 MiB", _request(b" " * (MAX_BODY_BYTES + 1)), False),
        ("sent without a length", {**_request(body_of(shipped)), "chunked": True}, False),
        # A length past what int() reads (4,300 digits), and a body longer than declared.
        ("a 4,401-digit length", _request(body, **{"content-length": "0" * 4400 + "2"}), False),
        (
            "over its declared length",
            _request(b" " * MAX_BODY_BYTES + body, **{"content-length": "100"}),
            False,
        ),
    ]


def send(client: Any, request: dict[str, Any]) -> Any:
    content = request["content"]
    if request.get("chunked"):  # a body of unknown length: Transfer-Encoding: chunked
        content = iter([content[:10], content[10:]])
    return client.post("/webhooks/drx", content=content, headers=request["headers"])


@contextmanager
def two_servers(chosen: list[Settings]) -> Iterator[tuple[Any, Any]]:
    """A client on an app with the fast path, and one on an app without it."""
    from litestar.testing import TestClient

    from interfaces.http.app import create_app

    with ExitStack() as stack:
        clients = []
        for settings in chosen:
            app = create_app(replace(settings, webhook_secrets=(SECRET,)))
            stack.callback(app.state.parts.close)
            clients.append(stack.enter_context(TestClient(app)))
        clients[1].app.fast_webhook = None
        yield clients[0], clients[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def servers(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        chosen = []
        for name in ("fast", "framework"):
            (tmp_path / name).mkdir()
            chosen.append(sqlite_settings(tmp_path / name))
            migrate(chosen[-1])
        with two_servers(chosen) as clients:
            yield clients
        return
    url = request.getfixturevalue("postgres_url")
    with (
        migrated_postgres(url) as first,
        migrated_postgres(url) as second,
        two_servers([first, second]) as clients,
    ):
        yield clients


def counted(client: Any) -> list[bool]:
    """The fast path's decisions from now on: True for a request it answered."""
    kept, decided = client.app.fast_webhook, []

    async def deciding(scope, receive, send):
        left = await kept(scope, receive, send)
        decided.append(left is None)
        return left

    client.app.fast_webhook = deciding
    return decided


def stored(client: Any) -> tuple[Any, ...]:
    settle(client)
    prescriptions = client.get("/prescriptions?limit=500", headers=AUTH).json()
    deliveries = client.get("/deliveries?limit=500", headers=AUTH).json()
    figures = client.get("/metrics").text
    outcomes = {
        outcome: metric(figures, "drx_webhook_deliveries_total", outcome=outcome)
        for outcome in ("accepted", "duplicate", "conflict", "parked", "invalid_signature")
    }
    return (
        [{k: v for k, v in p.items() if k != "updated_at"} for p in prescriptions["items"]],
        sorted((d["event_id"], d["status"]) for d in deliveries["items"]),
        outcomes,
    )


def test_the_same_deliveries_get_the_same_answers_both_ways(servers):
    fast, framework = servers
    decided = counted(fast)
    for name, request, by_fast_path in requests():
        with_it, without = send(fast, request), send(framework, request)
        assert with_it.status_code == without.status_code, name
        assert with_it.headers.multi_items() == without.headers.multi_items(), name
        assert with_it.content == without.content, name
        assert decided.pop() is by_fast_path, name
    assert stored(fast) == stored(framework)
    counts = stored(fast)[2]  # duplicates: a retry, its copy with another attempt, the chunked one
    assert (counts["accepted"], counts["duplicate"], counts["conflict"]) == (len(EXAMPLES), 3, 1)
    assert counts["parked"] == 1


def test_a_store_that_fails_is_the_frameworks_503_and_is_not_tried_twice(servers, monkeypatch):
    fast, framework = servers
    decided, tries = counted(fast), {fast: 0, framework: 0}
    for client in (fast, framework):

        async def failing(command, timeout_s=5.0, client=client):
            tries[client] += 1
            raise TimeoutError

        monkeypatch.setattr(client.app.state.parts.committer, "submit_async", failing)
    request = _request(EXAMPLES[0].read_bytes())
    with_it, without = send(fast, request), send(framework, request)
    assert (with_it.status_code, with_it.headers.get("retry-after")) == (503, "5")
    assert with_it.headers.multi_items() == without.headers.multi_items()
    assert with_it.content == without.content
    assert decided == [False]
    assert tries == {fast: 1, framework: 1}
    busy = metric(fast.get("/metrics").text, "drx_webhook_deliveries_total", outcome="busy")
    assert busy == 1.0
    monkeypatch.undo()
    assert send(fast, request).status_code == 202
    assert decided == [False, True]


def test_a_store_that_fails_late_is_still_503_not_a_stale_signature(servers, monkeypatch):
    """A delivery signed 4 min 50 s ago, whose store fails after the committer's 20 s wait: its
    signature was good when checked, and the answer is 503 (retry), not 401 (not ours)."""
    fast, framework = servers
    clock = {"shift": 0.0}
    # The signature check's clock alone (the module's `time`), not the process's.
    shifted = SimpleNamespace(time=lambda: time.time() + clock["shift"])
    monkeypatch.setattr(signature, "time", shifted)
    for client in (fast, framework):

        async def failing(command, timeout_s=20.0):
            clock["shift"] += timeout_s
            raise TimeoutError

        monkeypatch.setattr(client.app.state.parts.committer, "submit_async", failing)
    body = EXAMPLES[0].read_bytes()
    headers = signed_headers(body, SECRET, skew=timedelta(seconds=-290))
    for client in (fast, framework):
        clock["shift"] = 0.0
        answer = send(client, {"content": body, "headers": headers})
        assert (answer.status_code, answer.json()["error"]) == (503, "busy")
