"""Group commit: concurrent webhook requests hand their delivery to one committer thread, which
saves what has gathered in one transaction and answers each request once its batch is durable.

While one batch commits, the next one gathers, so batches grow with the load and a lone request
waits for nothing but its own save. The webhook handler awaits its receipt (`submit_async`)
without holding a thread.

When the store cannot be reached, a batch fails only after the pool's timeout; so for a moment
after such a failure, batches are refused at once (a 503 with Retry-After) instead of each
waiting that long again, and request threads do not pile up while the database is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from eventsourcing.persistence import IntegrityError, OperationalError

from domain.commands import RecordDelivery
from domain.service import Prescriptions, Receipt

log = logging.getLogger(__name__)

MAX_BATCH = 100
COOLDOWN_S = 1.0
# Shorter than a sender's usual timeout, so a request is answered (503) before it gives up.
WAIT_S = 20.0

# How the committer hands a request its receipt, or the batch's error.
Answer = Callable[[Receipt | None, BaseException | None], None]


class GroupCommitter:
    def __init__(
        self,
        prescriptions: Prescriptions,
        unavailable: tuple[type[BaseException], ...],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.prescriptions, self.max_batch = prescriptions, max_batch
        self.unavailable = unavailable
        self._refuse_until = 0.0
        self._queue: queue.Queue[tuple[RecordDelivery, Answer] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit_async(self, command: RecordDelivery, timeout_s: float = WAIT_S) -> Receipt:
        """The delivery's receipt once its batch is committed, awaited on the caller's event
        loop; the batch's error otherwise; TimeoutError after `timeout_s`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()

        def settle(receipt: Receipt | None, error: BaseException | None) -> None:
            if future.done():  # the request gave up waiting
                return
            if error is None:
                future.set_result(receipt)  # type: ignore[arg-type]
            else:
                future.set_exception(error)

        def answer(receipt: Receipt | None, error: BaseException | None) -> None:
            # The loop may be gone (the worker stopping): the delivery is stored or not all the
            # same, and the sender's retry learns which.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, receipt, error)

        self._put(command, answer)
        return await asyncio.wait_for(future, timeout_s)

    def _put(self, command: RecordDelivery, answer: Answer) -> None:
        self._ensure_running()
        self._queue.put((command, answer))

    def _ensure_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="drx-group-commit", daemon=True
                    )
                    self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._commit(batch)

    @property
    def store_recently_failed(self) -> bool:
        return time.monotonic() < self._refuse_until

    def _commit(self, batch: list[tuple[RecordDelivery, Answer]]) -> None:
        if self.store_recently_failed:
            # Refused without trying, and without re-arming the pause: only a real failure of
            # the store does. A pause re-armed by the refusals it causes would never end while
            # DRx keeps sending, and the first batch after it is the probe of the store.
            refusal = OperationalError("the store failed a moment ago; not tried again yet")
            for _, answer in batch:
                answer(None, refusal)
            return
        try:
            receipts = self.prescriptions.record_deliveries([command for command, _ in batch])
        except BaseException as exc:  # every request of the batch gets the error (a 503, say)
            if isinstance(exc, self.unavailable) and not isinstance(exc, IntegrityError):
                self._refuse_until = time.monotonic() + COOLDOWN_S
            for _, answer in batch:
                answer(None, exc)
            return
        for (_, answer), receipt in zip(batch, receipts, strict=True):
            answer(receipt, None)
