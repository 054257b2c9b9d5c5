"""The change feed over HTTP: `GET /changes` (pages after a position) and `GET /changes/stream`
(Server-Sent Events, resumable with `Last-Event-ID`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Stream

from domain.names import CHANGE_TYPES
from infrastructure.change_feed import ChangeFilter, FeedRow
from interfaces.bootstrap import Parts
from interfaces.http.access import PHI, StreamEntries, carried
from interfaces.http.auth import BEARER, KEY_REFUSALS, require_read
from interfaces.http.errors import ProblemError
from interfaces.http.pagination import QueryId
from interfaces.http.schemas import ChangePage, Problem

# A stream says it is alive at least this often (the contract: at least every 15 s).
HEARTBEAT_S = 10.0
# An idle stream checks its key (the console's, its session) this often: with the key ring's
# reload every second, a revoked key's open streams end within 5 s, as new requests do.
CHECK_S = 3.0
# What an EventSource waits before it reconnects after the connection drops, in ms.
RETRY_MS = 2000

REFUSED = {
    400: ResponseSpec(Problem, description="a parameter is invalid; the body names it"),
    409: ResponseSpec(
        Problem, description="the position is past the feed's head: this database never gave it out"
    ),
    **KEY_REFUSALS,
}
Position = Annotated[
    str | None,
    QueryParameter(
        description="start after this position (exclusive): a change's position, or 0",
        pattern="^(0|[1-9][0-9]{0,17})$",
    ),
]
_TYPE = "(" + "|".join(t.replace(".", "\\.") for t in CHANGE_TYPES) + ")"
Types = Annotated[
    str | None,
    QueryParameter(
        description="only these types, comma-separated: " + ", ".join(CHANGE_TYPES),
        pattern=f"^({_TYPE}(,{_TYPE})*)?$",
    ),
]


def _position(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ProblemError(400, "invalid_parameter", f"{name} is not a position of the feed")
    return int(value)


def _not_past_head(name: str, position: int | None, head: int) -> None:
    """A position the feed has not reached is refused (409: well formed, but not one of this
    feed's), not waited for: no change was ever given out there, so a consumer holding one
    follows another database, or this one restored from an older backup, and waiting at it
    would skip, unseen, every change this feed puts below it. The head is the database's
    (every worker's and every instance's changes), read once the position was given, so a
    position any of them served passes."""
    if position is not None and position > head:
        raise ProblemError(
            409,
            "position_past_head",
            f"{name} {position} is past the feed's head ({head}): this database gave out no "
            "such position (another database, or this one restored from an older backup?); "
            f"go on from a position at most {head}",
        )


def change_filter(
    prescription_id: str | None, patient_id: str | None, types: str | None
) -> ChangeFilter:
    chosen = tuple(t.strip() for t in (types or "").split(",") if t.strip())
    if set(chosen) - set(CHANGE_TYPES):  # the pattern lets none through; a subscription's too
        raise ProblemError(
            400, "invalid_parameter", f"types: a change type is one of {', '.join(CHANGE_TYPES)}"
        )
    return ChangeFilter(prescription_id or None, patient_id or None, chosen)


HEARTBEAT = b": heartbeat\r\n\r\n"  # a comment alone: an EventSource dispatches nothing


def follow_checked(
    parts: Parts,
    after: int | None,
    where: ChangeFilter,
    heartbeat_s: float,
    allowed: Callable[[], bool],
) -> AsyncIterator[list[FeedRow] | None]:
    """A stream's batches (`ChangeHub.follow`), its credentials checked at each batch and at
    least every CHECK_S while idle: None, and the end, once `allowed()` is false; an empty batch
    when a heartbeat is due (`heartbeat_s` after the last thing sent)."""
    tick = min(heartbeat_s, CHECK_S)
    return _checked(parts.hub.follow(after, where, tick), heartbeat_s, tick, allowed)


async def _checked(
    batches: AsyncIterator[list[FeedRow]],
    heartbeat_s: float,
    tick: float,
    allowed: Callable[[], bool],
) -> AsyncIterator[list[FeedRow] | None]:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    async for rows in batches:
        if not allowed():
            yield None
            return
        now = loop.time()
        if rows or now - sent >= heartbeat_s - tick / 2:  # ticks come late, never early
            sent = now
            yield rows


async def _messages(
    batches: AsyncIterator[list[FeedRow] | None], entries: StreamEntries
) -> AsyncIterator[bytes]:
    """Server-Sent Events, a batch of changes per write: at DRx's flat-out rate and a hundred
    streams, one write per change cost the web workers most of their CPU. The stream ends
    within CHECK_S of its key no longer being accepted (revoked), before anything else is sent."""
    yield b"retry: %d\r\n\r\n" % RETRY_MS
    async for rows in batches:
        if rows is None:
            return
        entries.carrying(rows)
        yield b"".join(row.sse for row in rows) if rows else HEARTBEAT


class ChangeController(Controller):
    path = "/changes"
    tags = ("changes",)
    guards = [require_read]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @get(
        "/",
        operation_id="listChanges",
        summary="The change feed in position order, after a position",
        description=(
            "Every recorded fact and every signal is one change, at a position that only grows "
            "and stays valid across restarts and rebuilds. Keep the last position you handled "
            "and ask again with after= it; next_after is where the next page starts: the last "
            "change's position, or, on the last page, the feed's head (so that a filtered "
            "follower does not read the same changes again). A position past the feed's head is a "
            "409: this database never gave it out."
        ),
        sync_to_thread=True,
        responses=REFUSED,
        opt=PHI,
    )
    def list_changes(
        self,
        request: Request[Any, Any, Any],
        parts: NamedDependency[Parts],
        after: Position = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        prescription_id: QueryId = None,
        patient_id: QueryId = None,
        types: Types = None,
    ) -> Response[ChangePage]:
        start = _position("after", after) or 0
        where = change_filter(prescription_id, patient_id, types)
        head = parts.feed.head()  # before the query: every change up to it is committed
        _not_past_head("after", start, head)
        rows = parts.feed.after(start, limit, where)
        answer = carried(request)
        for row in rows:
            answer.add(row.prescription_id, row.patient_id)
        next_after = rows[-1].position if rows else start
        if len(rows) < limit:  # every match up to the head is here: go on from the head
            next_after = max(next_after, head)
        # The stored changes are already the API's JSON: joined, not parsed and re-encoded.
        body = '{"items":[%s],"next_after":%d}' % (  # noqa: UP031
            ",".join(row.document for row in rows),
            next_after,
        )
        return Response(body.encode(), media_type=MediaType.JSON)  # type: ignore[arg-type]

    @get(
        "/stream",
        operation_id="streamChanges",
        summary="The change feed as Server-Sent Events, from a position or from now",
        description=(
            "Each message: id the position, event the type, data the change's JSON. Starts "
            "after the Last-Event-ID header (an EventSource sends it when it reconnects), else "
            "after after=, else from now; a position past the feed's head is a 409. A comment "
            "line comes at least every 15 s."
        ),
        responses=REFUSED,
        media_type="text/event-stream",
        opt=PHI,
    )
    async def stream_changes(
        self,
        request: Request[Any, Any, Any],
        parts: NamedDependency[Parts],
        after: Position = None,
        prescription_id: QueryId = None,
        patient_id: QueryId = None,
        types: Types = None,
    ) -> Stream:
        resumed = _position("Last-Event-ID", request.headers.get("last-event-id", "").strip())
        start = resumed if resumed is not None else _position("after", after)
        where = change_filter(prescription_id, patient_id, types)
        # From now, from 0, or from up to this worker's head (never past the database's) is
        # never past the head; only a later position costs the database a look.
        if start and start > parts.hub.head:
            head = await asyncio.to_thread(parts.feed.head)
            _not_past_head("Last-Event-ID" if resumed is not None else "after", start, head)
        heartbeat_s = getattr(request.app.state, "heartbeat_s", HEARTBEAT_S)
        key = request.headers.get("authorization", "").partition(" ")[2].strip()
        batches = follow_checked(
            parts, start, where, heartbeat_s, lambda: parts.keys.find(key) is not None
        )
        return Stream(
            _messages(batches, StreamEntries(parts.access_log, request.scope)),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
