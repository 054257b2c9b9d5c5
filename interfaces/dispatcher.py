"""The subscription dispatcher: POSTs each change a subscription matches to its URL, signed with
its own secret by the Standard Webhooks scheme, in position order, at least once.

- It runs where the projections run (one process per database; a standby takes over with the
  projector's leadership), woken by the projector after each batch, and re-reads the
  subscriptions every second, so that one added, paused or rewound by the API or the CLI, in any
  process, is taken up within a second.
- Each active subscription has a thread of its own, with its own connection and timeouts, so a
  slow or dead endpoint holds up only its own subscription; the webhook's processes are not
  touched at all.
- One change at a time per subscription, the next only after a 2xx: order per subscription. The
  position moves after the 2xx is recorded; a crash between the two sends that change again,
  with the same `webhook-id` (`msg_<subscription>_<position>`, and `_r<n>` after a rewind).
- Any other answer, or none (a timeout, a refused connection), is retried after a back-off from
  about a second, doubling up to ten minutes, or after the endpoint's `Retry-After` (seconds or
  an HTTP date, at most an hour); a 410 disables the subscription at once, and so do 3 days of
  failures without a success. Every attempt is logged in the attempts table (status, a short
  error, duration; never the body either way).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from domain.instants import sortable_instant
from domain.signals import Clock
from infrastructure.change_feed import ChangeFeed, FeedRow
from infrastructure.subscriptions import (
    ACTIVE,
    DISABLED,
    Subscription,
    SubscriptionNotFoundError,
    SubscriptionStore,
)
from interfaces.drx.signature import sign

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 600.0
RETRY_AFTER_MAX_S = 3600.0
GIVE_UP_AFTER = timedelta(days=3)
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
PAGE = 100
REFRESH_S = 1.0


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
    if value.isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - now).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


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


class Dispatcher:
    def __init__(
        self,
        store: SubscriptionStore,
        feed: ChangeFeed,
        leading: Callable[[], bool],
        clock: Clock,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        refresh_s: float = REFRESH_S,
        first_backoff_s: float = BACKOFF_FIRST_S,
    ) -> None:
        self.store, self.feed, self.leading, self.clock = store, feed, leading, clock
        self.timeout, self.refresh_s = timeout, refresh_s
        self.first_backoff_s = first_backoff_s
        self._stop = threading.Event()
        self._news = threading.Condition()
        self._ticks = 0
        self._workers: dict[str, threading.Thread] = {}
        self._thread: threading.Thread | None = None
        self._rng = random.Random()  # noqa: S311 - spreads retries; no secret comes of it

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="drx-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        for thread in [self._thread, *self._workers.values()]:
            if thread is not None:
                thread.join(timeout=15)
        self._thread = None
        self._workers.clear()

    def wake(self) -> None:
        """New changes may be there (the projector calls this after each batch)."""
        with self._news:
            self._ticks += 1
            self._news.notify_all()

    def _wait_for_news(self, seen: int, timeout_s: float) -> None:
        with self._news:
            self._news.wait_for(lambda: self._ticks != seen or self._stop.is_set(), timeout_s)

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.leading():
                    self._start_workers()
                failures = 0
            except Exception as exc:  # the database away: try again
                failures += 1
                if failures == 1:
                    log.warning("subscriptions paused: %s", type(exc).__name__)
            self._stop.wait(self.refresh_s)

    def _start_workers(self) -> None:
        self._workers = {k: t for k, t in self._workers.items() if t.is_alive()}
        for subscription in self.store.all():
            if subscription.state == ACTIVE and subscription.id not in self._workers:
                thread = threading.Thread(
                    target=self._work,
                    args=(subscription.id,),
                    name=f"drx-dispatch-{subscription.id}",
                    daemon=True,
                )
                self._workers[subscription.id] = thread
                thread.start()

    # One subscription

    def _work(self, subscription_id: str) -> None:
        with httpx.Client(
            timeout=self.timeout, follow_redirects=False, headers={"user-agent": "drx-dispatcher"}
        ) as client:
            while not self._stop.is_set() and self.leading():
                try:
                    if not self._round(client, subscription_id):
                        return
                except SubscriptionNotFoundError:
                    return
                except Exception as exc:  # our database away: the supervisor starts us again
                    log.warning(
                        "subscription %s waits for the database: %s",
                        subscription_id,
                        type(exc).__name__,
                    )
                    self._stop.wait(1.0)
                    return

    def _round(self, client: httpx.Client, subscription_id: str) -> bool:
        """Send what is due; False when the subscription is no longer active."""
        subscription = self.store.get(subscription_id)
        if subscription.state != ACTIVE:
            return False
        now = sortable_instant(self.clock.now())
        if subscription.retry_at and subscription.retry_at > now:
            self._stop.wait(0.2)  # short: a rewind or resume meanwhile is seen soon
            return True
        seen = self._ticks
        head = self.feed.head()
        rows = self.feed.after(subscription.position, PAGE, subscription.filter)
        if not rows:
            if head > subscription.position:
                self.store.skip_to(subscription, head)
            self._wait_for_news(seen, self.refresh_s)
            return True
        for row in rows:
            if self._stop.is_set() or not self._send(client, subscription, row):
                return True  # failed, or changed meanwhile: read it again
            subscription = replace(subscription, position=row.position)
        return True

    def _send(self, client: httpx.Client, subscription: Subscription, row: FeedRow) -> bool:
        """One attempt; True when it was delivered and recorded."""
        body = envelope(row)
        webhook_id = subscription.webhook_id(row.position)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.store.secret(subscription), webhook_id, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        retry_after: str | None = None
        started = time.perf_counter()
        try:
            # Streamed and not read: an endpoint's answer body is never needed, nor kept.
            with client.stream("POST", subscription.url, content=body, headers=headers) as answer:
                status, retry_after = answer.status_code, answer.headers.get("retry-after")
        except httpx.TimeoutException:
            error = "no answer in time"
        except httpx.HTTPError as exc:
            error = f"could not deliver ({type(exc).__name__})"
        duration_ms = round((time.perf_counter() - started) * 1000)
        if status is not None and 200 <= status < 300:
            return self.store.record(
                subscription, row.position, status=status, error=None,
                duration_ms=duration_ms, delivered=True,
            )  # fmt: skip
        if status is not None:
            error = f"HTTP {status}"
        return self._failed(subscription, row.position, status, error, duration_ms, retry_after)

    def _failed(
        self,
        subscription: Subscription,
        position: int,
        status: int | None,
        error: str | None,
        duration_ms: int,
        retry_after: str | None,
    ) -> bool:
        now = self.clock.now()
        failing_since = subscription.failing_since or sortable_instant(now)
        failures = subscription.failures + 1
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
        self.store.record(
            subscription,
            position,
            status=status,
            error=error,
            duration_ms=duration_ms,
            delivered=False,
            state=state,
            failures=failures,
            failing_since=failing_since,
            retry_at=retry_at,
            disabled_reason=reason,
        )
        if state == DISABLED:
            log.warning("subscription %s disabled: %s", subscription.id, reason)
        elif failures == 1 or failures % 10 == 0:
            log.info(
                "subscription %s: delivery to %s failed (%s), attempt %d",
                subscription.id,
                _where(subscription.url),
                error,
                failures,
            )
        return False
