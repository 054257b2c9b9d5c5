"""The subscription dispatcher: POSTs each change a subscription matches to its URL, signed with
its own secret by the Standard Webhooks scheme, in position order, at least once.

- It runs in one process per database (`drx serve` starts it beside the projector, with a
  leadership of its own, so that a standby takes over when it dies), and follows the change
  feed through a `ChangeHub` like the streams do: woken by PostgreSQL's NOTIFY, or polling the
  feed's head on SQLite; it reads the subscriptions again every second, so that one added,
  paused, resumed, rewound or removed by the API or the CLI, in any process, is taken up
  within a second.
- Each active subscription is an asyncio task with its own connection (`endpoint.py`) and
  timeout, so a slow or dead endpoint holds up only its own subscription; the webhook's
  processes are not touched.
- One change at a time per subscription, the next only after a 2xx: order per subscription.
  Where it stands is written after the 2xx, every 100 ms at most (with the attempts since), so
  a crash sends the changes since that write again, with the same `webhook-id`
  (`msg_<subscription>_<position>`, and `_r<n>` after a rewind).
- Any other answer, or none (a timeout, a refused connection), is retried after a back-off from
  about a second, doubling up to ten minutes, or after the endpoint's `Retry-After` (seconds or
  an HTTP date, at most an hour); a 410 disables the subscription at once, and so do 3 days of
  failures without a success. Every attempt is logged in the attempts table (status, a short
  error, duration; never a body either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from domain.clock import Clock
from domain.instants import sortable_instant
from infrastructure.change_feed import FeedRow
from infrastructure.change_hub import ChangeHub
from infrastructure.subscriptions import (
    ACTIVE,
    DISABLED,
    AttemptRecord,
    Subscription,
    SubscriptionNotFoundError,
    SubscriptionStore,
)
from interfaces.drx.signature import secret_key, sign_with_key
from interfaces.endpoint import Endpoint, EndpointError

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 600.0
RETRY_AFTER_MAX_S = 3600.0
GIVE_UP_AFTER = timedelta(days=3)
TIMEOUT_S = 10.0
REFRESH_S = 1.0
# How long the check that this process still leads may take: past it, the lead is taken as
# lost and every subscription stops sending until a check answers (a standby may be taking it).
# The supervisor's read of the subscriptions has the same bound.
LEAD_CHECK_S = 5.0
FLUSH_S = 0.1
FLUSH_AT = 200  # attempts
LOOKUP_THREADS = 32


def backoff_s(
    failures: int, retry_after: float | None, rng: random.Random, first_s: float = BACKOFF_FIRST_S
) -> float:
    """How long to wait after the `failures`-th failure in a row."""
    if retry_after is not None:
        return min(max(retry_after, first_s / 2), RETRY_AFTER_MAX_S)
    doubled = min(first_s * 2 ** min(failures - 1, 20), BACKOFF_MAX_S)
    return float(doubled * rng.uniform(0.75, 1.0))  # spread, and never over the maximum


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header's wait: delay-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes "²" (a latin-1 header byte)
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # a year or an offset past any date's
        return None
    if when.tzinfo is None:  # the asctime form and "-0000": UTC, as HTTP dates always are
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def envelope(row: FeedRow) -> bytes:
    """The body POSTed: {"type", "timestamp" (the change's recorded time), "data" (the change,
    as stored)}."""
    return b'{"type":"%s","timestamp":"%s","data":%s}' % (
        row.type.encode(),
        row.recorded_at.encode(),
        row.document.encode(),
    )


def _where(url: str) -> str:
    """The endpoint as logs may show it: scheme and host, never a path or query (tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


@dataclass
class _Progress:
    """A subscription's task's view of where it stands, and what it has not written yet."""

    subscription: Subscription
    position: int
    # The failures in a row and since when: ended by a 2xx at once, written or not yet (a
    # failure read from the last row written would carry on a streak a success had ended).
    failures: int = 0
    failing_since: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    written_at: float = field(default_factory=time.monotonic)
    writing: asyncio.Task[bool] | None = None  # the write in flight, if any


class _Changed(Exception):
    """The subscription was changed elsewhere (paused, rewound, removed): its task ends and the
    supervisor starts it again as it now is."""


class Dispatcher:
    def __init__(
        self,
        store: SubscriptionStore,
        hub: ChangeHub,
        leading: Callable[[], bool],
        clock: Clock,
        *,
        timeout_s: float = TIMEOUT_S,
        refresh_s: float = REFRESH_S,
        first_backoff_s: float = BACKOFF_FIRST_S,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.hub, self.leading, self.clock = store, hub, leading, clock
        self.release = release
        self.timeout_s, self.refresh_s = timeout_s, refresh_s
        self.first_backoff_s = first_backoff_s
        self._rng = random.Random()  # noqa: S311 - spreads retries; no secret comes of it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None  # the stop, on the dispatcher's loop
        self._tasks: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}
        self._db_threads: ThreadPoolExecutor | None = None
        # The lead's check has a thread of its own: database calls that hang in the others
        # (a half-open network) must not keep it from finding the lead lost.
        self._lead_thread: ThreadPoolExecutor | None = None

    # Running: in a thread of its own (`start`), or in the calling one (`run`)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="drx-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():  # stuck (a connect that hangs): it releases as it ends
                log.warning("the dispatcher has not stopped yet; it gives up its lead when it does")
                return
            self._thread = None
        self._release()

    def run(self) -> None:
        self._lead_thread = ThreadPoolExecutor(1, thread_name_prefix="drx-dispatch-lead")
        try:
            with ThreadPoolExecutor(4, thread_name_prefix="drx-dispatch-db") as pool:
                self._db_threads = pool
                asyncio.run(self._supervised())
        finally:
            self._lead_thread.shutdown(wait=False)  # a check that hangs is left to end alone
            self._release()  # nothing of it runs any more: the next dispatcher may lead

    async def _supervised(self) -> None:
        # asyncio's default threads resolve the endpoints' host names (open_connection); a
        # lookup that hangs holds its thread past the POST's timeout, so there are enough for
        # a few such endpoints not to keep the others' lookups waiting.
        threads = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="drx-dispatch-dns")
        asyncio.get_running_loop().set_default_executor(threads)
        await self._supervise()

    def _release(self) -> None:
        if self.release is not None:
            self.release()

    async def _in_db_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking database call (and the feed's reads), in threads of the dispatcher's
        own: asyncio's default threads resolve the endpoints' host names, and lookups that hang
        must not hold up every subscription's bookkeeping or its changes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._db_threads, functools.partial(call, *args, **kwargs)
        )

    async def _supervise(self) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        if self._stop.is_set():
            return
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    if await self._still_leading():
                        # Bounded too: a read queued behind database calls that hang would
                        # keep the supervisor from its next check of the lead.
                        subscriptions = await asyncio.wait_for(
                            self._in_db_thread(self.store.all), LEAD_CHECK_S
                        )
                        await self._keep_tasks(subscriptions)
                    else:
                        self._cancel_all()
                    failures = 0
                except Exception as exc:  # the database away: try again
                    failures += 1
                    if failures == 1:
                        log.warning("subscriptions wait for the database: %s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self.refresh_s)
        finally:
            self._cancel_all()
            await asyncio.gather(
                *(task for _, task in self._tasks.values()), return_exceptions=True
            )

    async def _still_leading(self) -> bool:
        """Whether this process still leads; a check that fails or takes over LEAD_CHECK_S is
        a no (a lead that cannot be confirmed may be a standby's by now)."""
        loop = asyncio.get_running_loop()
        try:
            return bool(
                await asyncio.wait_for(
                    loop.run_in_executor(self._lead_thread, self.leading), LEAD_CHECK_S
                )
            )
        except Exception as exc:
            if any(not task.done() for _, task in self._tasks.values()):  # once, as it stops
                log.warning(
                    "the subscriptions' lead cannot be confirmed (%s): they stop sending "
                    "until it is",
                    type(exc).__name__,
                )
            return False

    async def _keep_tasks(self, subscriptions: list[Subscription]) -> None:
        """One task per active subscription, as it now is. A task that has ended (disabled,
        paused, rewound, or its database away) starts again only from a read made after it
        ended: `subscriptions` may have been read before, and would start it as it was."""
        now = {s.id: s for s in subscriptions}
        ended = set()
        for sid, (was, task) in list(self._tasks.items()):
            current = now.get(sid)
            changed = current is None or current.state != ACTIVE
            changed = changed or (current is not None and current.generation != was.generation)
            if task.done() or changed:
                task.cancel()
                del self._tasks[sid]
                ended.add(sid)
        for subscription in subscriptions:
            if subscription.id in ended:
                continue
            if subscription.state == ACTIVE and subscription.id not in self._tasks:
                task = asyncio.create_task(self._deliver(subscription))
                self._tasks[subscription.id] = (subscription, task)

    def _cancel_all(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()

    # One subscription

    async def _deliver(self, subscription: Subscription) -> None:
        progress = _Progress(
            subscription, subscription.position, subscription.failures, subscription.failing_since
        )
        try:
            key = secret_key(self.store.secret(subscription))
        except Exception as exc:  # a secret that cannot be read will never sign: say so, once
            await self._write(
                progress,
                state=DISABLED,
                disabled_reason=f"its secret cannot be read ({type(exc).__name__}): is "
                "DRX_ENCRYPTION_KEY the key it was stored with?",
            )
            log.error("subscription %s disabled: its secret cannot be read", subscription.id)
            return
        endpoint = Endpoint(subscription.url, self.timeout_s)
        try:
            await self._wait_for_retry(progress)
            changes = self.hub.follow(
                progress.position, subscription.filter, FLUSH_S, self._db_threads
            )
            async for rows in changes:
                for row in rows:
                    while not await self._attempt(endpoint, key, progress, row):
                        await self._wait_for_retry(progress)
                    if self._due(progress):
                        self._write_soon(progress)
                if not rows:
                    self._write_soon(progress)
        except _Changed:
            return
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write(progress))
            raise
        except Exception as exc:  # our database away: the supervisor starts it again
            log.warning(
                "subscription %s waits (%s): the dispatcher tries again within a second",
                subscription.id,
                type(exc).__name__,
            )
        finally:
            endpoint.close()

    def _due(self, progress: _Progress) -> bool:
        return (
            len(progress.attempts) >= FLUSH_AT or time.monotonic() - progress.written_at >= FLUSH_S
        )

    async def _attempt(
        self, endpoint: Endpoint, key: bytes, progress: _Progress, row: FeedRow
    ) -> bool:
        """One POST of the change; True when it was taken (a 2xx)."""
        subscription = progress.subscription
        body = envelope(row)
        webhook_id = subscription.webhook_id(row.position)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "drx-dispatcher",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_with_key(key, webhook_id, timestamp, body),
        }
        started, at = time.perf_counter(), sortable_instant(self.clock.now())
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        try:
            status, retry_after = await endpoint.post(body, headers)
        except EndpointError as exc:
            error = str(exc)
        took = round((time.perf_counter() - started) * 1000)
        if status is not None and 200 <= status < 300:
            progress.attempts.append(
                AttemptRecord(row.position, webhook_id, status, None, took, at)
            )
            progress.position = row.position
            progress.failures, progress.failing_since = 0, None
            return True
        error = error or f"HTTP {status}"
        progress.attempts.append(AttemptRecord(row.position, webhook_id, status, error, took, at))
        await self._failed(progress, status, error, retry_after)
        return False

    async def _failed(
        self, progress: _Progress, status: int | None, error: str, retry_after: str | None
    ) -> None:
        subscription = progress.subscription
        now = self.clock.now()
        failing_since = progress.failing_since or sortable_instant(now)
        failures = progress.failures + 1
        progress.failures, progress.failing_since = failures, failing_since
        state, reason, retry_at = None, None, None
        if status == 410:
            state, reason = DISABLED, "the endpoint answered 410 Gone"
        elif now - datetime.fromisoformat(failing_since) >= GIVE_UP_AFTER:
            state, reason = DISABLED, f"every attempt failed for 3 days (since {failing_since})"
        else:
            wait = backoff_s(
                failures, retry_after_s(retry_after, now), self._rng, self.first_backoff_s
            )
            retry_at = sortable_instant(now + timedelta(seconds=wait))
        written = await self._write(
            progress,
            state=state,
            failures=failures,
            failing_since=failing_since,
            retry_at=retry_at,
            disabled_reason=reason,
        )
        if state == DISABLED:
            log.warning("subscription %s disabled: %s", subscription.id, reason)
            raise _Changed
        if written and (failures == 1 or failures % 10 == 0):
            log.info(
                "subscription %s: delivery to %s failed (%s), attempt %d",
                subscription.id,
                _where(subscription.url),
                error,
                failures,
            )

    async def _wait_for_retry(self, progress: _Progress) -> None:
        """Until the subscription's retry time, by the clock (short sleeps: a clock that tests
        drive, and a stop, are seen soon); _Changed when a resume forgot its failures
        meanwhile (the row is read again every `refresh_s`: a wait can last an hour)."""
        read_at = time.monotonic()
        while progress.subscription.retry_at:
            if sortable_instant(self.clock.now()) >= progress.subscription.retry_at:
                return
            if time.monotonic() - read_at >= self.refresh_s:
                read_at = time.monotonic()
                try:
                    now = await self._in_db_thread(self.store.get, progress.subscription.id)
                except SubscriptionNotFoundError:
                    raise _Changed from None
                if now.failing_since != progress.subscription.failing_since:
                    raise _Changed
            await asyncio.sleep(min(0.2, self.refresh_s))

    async def _write(self, progress: _Progress, **state: Any) -> bool:
        """Write where it stands and the attempts since (after the write in flight, if any);
        _Changed when the subscription was changed meanwhile."""
        await self._settle(progress)
        return await self._commit(progress, **state)

    def _write_soon(self, progress: _Progress) -> None:
        """The same in the background, so that sending goes on while it commits; one write in
        flight at a time (the next one takes what came meanwhile)."""
        task = progress.writing
        if task is not None and not task.done():
            return
        if task is not None:
            task.result()  # _Changed, or the database's error, from the last one
        progress.writing = asyncio.create_task(self._commit(progress))

    async def _settle(self, progress: _Progress) -> None:
        task, progress.writing = progress.writing, None
        if task is not None:
            await task

    async def _commit(self, progress: _Progress, **state: Any) -> bool:
        attempts, progress.attempts = progress.attempts, []
        position, progress.written_at = progress.position, time.monotonic()
        if not attempts and not state and position == progress.subscription.position:
            return False
        if "failures" not in state and progress.failures:  # a streak goes on as it was written
            state.update(
                failures=progress.failures,
                failing_since=progress.failing_since,
                retry_at=progress.subscription.retry_at,
            )
        updated = await self._in_db_thread(
            self.store.record, progress.subscription, position, attempts, **state
        )
        if updated is None:
            raise _Changed
        progress.subscription = updated
        return True
