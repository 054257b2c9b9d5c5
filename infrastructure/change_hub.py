"""A web worker's view of the change feed's head, shared by all its streams.

One thread per web worker learns of new changes: on PostgreSQL it LISTENs on the feed's
channel (the projector NOTIFYs it in the transaction that writes the changes, so every worker
of every `drx serve` on the database hears each commit), with a slow poll beside it in case a
notification was lost with a connection; on SQLite, where nothing crosses processes, it polls
the feed's head (one primary-key lookup) every `poll_s`. It reads each new change once into a
bounded buffer of the latest ones, and wakes the worker's streams; a stream reads from the
buffer, or from the database while it is further behind than the buffer reaches.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any

import psycopg

from infrastructure.change_feed import ChangeFeed, ChangeFilter, FeedRow
from infrastructure.database import postgres_conninfo
from infrastructure.settings import Settings

log = logging.getLogger(__name__)

BUFFERED = 2000  # the latest changes a worker keeps for its streams
PAGE = 500
SQLITE_POLL_S = 0.1
LISTEN_FALLBACK_POLL_S = 2.0


class ChangeHub:
    def __init__(
        self,
        feed: ChangeFeed,
        settings: Settings,
        channel: str,
        *,
        poll_s: float | None = None,
        buffered: int = BUFFERED,
    ) -> None:
        self.feed, self.settings, self.channel = feed, settings, channel
        self.listen = settings.dialect == "postgresql"
        self.poll_s = poll_s or (LISTEN_FALLBACK_POLL_S if self.listen else SQLITE_POLL_S)
        self.buffered = buffered
        # The latest changes, in position order (trimmed to `buffered` when twice as many).
        self._rows: list[FeedRow] = []
        self._positions: list[int] = []
        self._start = self._head = 0  # the buffer holds the changes in (start, head]
        self._guard = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None

    # The thread

    def start(self) -> None:
        with self._guard:
            if self._thread is not None:
                return
            self._stop.clear()
            self._head = self._start = self.feed.head()
            self._thread = threading.Thread(target=self._run, name="drx-change-hub", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def head(self) -> int:
        return self._head

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._wait_for_news()
                self._read_new()
                failures = 0
            except Exception as exc:  # the database away: keep trying, quietly
                failures += 1
                if failures == 1:
                    log.warning("the change streams wait for the database: %s", type(exc).__name__)
                self._close_listener()
                self._stop.wait(min(0.2 * 2**failures, 5.0))

    def _wait_for_news(self) -> None:
        if not self.listen:
            self._stop.wait(self.poll_s)
            return
        if self._conn is None:
            self._conn = psycopg.connect(postgres_conninfo(self.settings), autocommit=True)
            self._conn.execute(f'LISTEN "{self.channel}"')
        # In short slices, so that a stop is seen soon; a notification ends the wait at once.
        deadline = time.monotonic() + self.poll_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            for _ in self._conn.notifies(timeout=0.2, stop_after=1):
                return

    def _close_listener(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _read_new(self) -> None:
        while True:
            rows = self.feed.after(self._head, PAGE)
            if not rows:
                return
            with self._guard:
                self._rows.extend(rows)
                self._positions.extend(row.position for row in rows)
                if len(self._rows) > 2 * self.buffered:
                    cut = len(self._rows) - self.buffered
                    self._start = self._positions[cut - 1]
                    del self._rows[:cut], self._positions[:cut]
                self._head = rows[-1].position
            self._wake_streams()
            if len(rows) < PAGE:
                return

    def _wake_streams(self) -> None:
        for loop in list(self._loops):
            if loop.is_closed():  # its streams are gone with it (a test client's, say)
                self._loops.pop(loop, None)
                continue
            with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                loop.call_soon_threadsafe(self._pulse, loop)

    def _pulse(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: wake its waiting streams, and give the next ones a fresh event."""
        event = self._loops.get(loop)
        self._loops[loop] = asyncio.Event()
        if event is not None:
            event.set()

    # The streams

    def _buffered_after(self, position: int) -> tuple[list[FeedRow], int] | None:
        """The buffered changes after `position` and the head they reach; None when the buffer
        no longer reaches back to it."""
        with self._guard:
            if position < self._start:
                return None
            return self._rows[bisect.bisect_right(self._positions, position) :], self._head

    async def follow(
        self,
        after: int | None,
        where: ChangeFilter,
        heartbeat_s: float,
        threads: Executor | None = None,
    ) -> AsyncIterator[list[FeedRow]]:
        """The changes that match `where`, from after `after` (None: from now) and then as
        they come, in batches (all that were there at a look); an empty batch when nothing was
        sent for `heartbeat_s`. Ends only when the client goes (the task is cancelled). Its
        database reads run in `threads` (None: asyncio's default ones)."""
        loop = asyncio.get_running_loop()
        if self._thread is None:  # the first stream of this process: one query, off the loop
            await loop.run_in_executor(threads, self.start)
        self._loops.setdefault(loop, asyncio.Event())
        position = self._head if after is None else after
        quiet_since = loop.time()  # when the stream last sent anything
        while True:
            found = self._buffered_after(position)
            if found is None:  # far behind: read from the database
                head = self._head
                rows = await loop.run_in_executor(threads, self.feed.after, position, PAGE, where)
                # A short page holds every match up to the database's head at the query, which
                # may be past `head` (rows the hub has not read yet): go on from the later one.
                last = rows[-1].position if rows else position
                reached = last if len(rows) == PAGE else max(head, position, last)
            else:
                rows, reached = [r for r in found[0] if where.matches(r)], found[1]
            if rows:
                yield rows
                quiet_since = loop.time()
            position = max(position, reached)
            if self._head > position:
                continue
            event = self._loops[loop]
            # Due heartbeat_s after the last thing sent, whatever woke the stream meanwhile
            # (changes its filter leaves out wake it too).
            remaining = quiet_since + heartbeat_s - loop.time()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
                    continue
            yield []
            quiet_since = loop.time()
