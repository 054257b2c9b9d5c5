"""POST /webhooks/drx answered from the raw ASGI request, before the framework: the service's
busiest path, whose answer is a 202 in nearly every case.

Through Litestar, a delivery's answer also cost the web worker its routing, the body's reading
into the handler's parameter, the response's rendering and two middlewares each wrapping `send`.
Here the same steps run as the handler runs them, `read_command` then `store`
(`interfaces/http/webhooks.py`), the answer is the one the handler gives, and it is counted in
the same metrics. Measured, alternately with the code before it: a web worker's CPU per delivery
20% less, and the webhook's flat-out rate 20% more (bench/RESULTS.md, 2026-12-02 morning).

Only the answers the handler gives when a delivery is stored (202 accepted, 200 duplicate or
conflict) are given here, and only to requests the framework would read the same way: a declared
length of at most 1 MiB in plain digits, a body no longer than that, each signature header and
the Content-Type at most once. Anything else goes to the framework, with the body it was sent
(what was read here is given again): a refusal (401, 400, 413, 415, 422), a delivery our
translator cannot read (parked, in a worker thread), a body sent without a length. A store that
fails is not tried twice: its error is handed to the framework's handler, which raises it before
checking the delivery again (a signature near the end of its 5 minutes, checked again after the
committer's 20 s wait, would be a 401), so that the answer (503 with Retry-After) and its log
line are the framework's own. tests/e2e/test_fast_webhook.py sends the same deliveries both ways.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from domain.commands import RecordDelivery
from interfaces.bootstrap import Parts
from interfaces.drx.signature import HEADERS
from interfaces.http.metrics import STARTED_KEY, WebhookMetrics
from interfaces.http.raw import send_json
from interfaces.http.webhooks import MAX_BODY_BYTES, STORE_FAILED, answer_of, read_command, store

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_READ = frozenset(name.encode() for name in (*HEADERS, "content-type"))


def _replaying(messages: list[MutableMapping[str, Any]], receive: Receive) -> Receive:
    """`receive` as the framework must see it: the messages already read here, then the rest."""
    pending = list(messages)

    async def replay() -> MutableMapping[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replay


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    found = [value for name, value in headers if name == b"content-length"]
    if len(found) != 1 or not found[0].isdigit() or len(found[0]) > 7:
        return None  # 1 MiB has 7 digits; a longer one is the framework's to read
    return int(found[0])


def _read_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The headers `read_command` reads, as the framework gives them (latin-1); None when one
    of them is sent twice (the framework's choice between the two is its own)."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name in _READ:
            text = name.decode("latin-1")
            if text in found:
                return None
            found[text] = value.decode("latin-1")
    return found


class FastWebhook:
    """The fast path (see the module's docstring): `answer` before the framework."""

    def __init__(self, parts: Parts, metrics: WebhookMetrics) -> None:
        self.parts, self.metrics = parts, metrics

    async def answer(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Any
    ) -> Receive | None:
        """None when the delivery was answered here; otherwise the `receive` the framework
        reads the request from (the same one, or one giving again the messages read here)."""
        if scope["method"] != "POST":
            return receive
        started = time.perf_counter()
        length = _declared_length(scope["headers"])
        headers = _read_headers(scope["headers"])
        if length is None or length > MAX_BODY_BYTES or headers is None:
            return receive
        messages, chunks, received = [], [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away
                return _replaying(messages, receive)
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > length:  # more than declared: the framework's reading (413)
                return _replaying(messages, receive)
            if not message.get("more_body", False):
                break
        replay = _replaying(messages, receive)
        state = scope.setdefault("state", {})
        state[STARTED_KEY] = started  # the framework's answer is timed from here too
        try:
            command = read_command(b"".join(chunks), headers, self.parts.verifier)
        except Exception:  # a refusal: the framework's, with its own answer
            return replay
        if not isinstance(command, RecordDelivery):  # to be parked, in a worker thread
            return replay
        try:
            receipt = await store(self.parts, command)
        except Exception as exc:
            state[STORE_FAILED] = exc
            return replay
        status, body = answer_of(receipt)
        try:
            await send_json(send, status, body)
        finally:
            self.metrics.observe(receipt.outcome.value, time.perf_counter() - started)
        return None
