"""Group commit: concurrent webhook requests hand their delivery to one committer thread, which
saves what has gathered in one transaction and answers each request once its batch is durable.

While one batch commits, the next one gathers, so batches grow with the load and a lone request
waits for nothing but its own save.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from domain.commands import RecordDelivery
from domain.service import Prescriptions, Receipt

log = logging.getLogger(__name__)

MAX_BATCH = 100


class GroupCommitter:
    def __init__(self, prescriptions: Prescriptions, max_batch: int = MAX_BATCH) -> None:
        self.prescriptions, self.max_batch = prescriptions, max_batch
        self._queue: queue.Queue[tuple[RecordDelivery, Future[Receipt]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, command: RecordDelivery, timeout_s: float = 60.0) -> Receipt:
        """The delivery's receipt once its batch is committed; the batch's error otherwise."""
        self._ensure_running()
        future: Future[Receipt] = Future()
        self._queue.put((command, future))
        return future.result(timeout=timeout_s)

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

    def _commit(self, batch: list[tuple[RecordDelivery, Future[Receipt]]]) -> None:
        try:
            receipts = self.prescriptions.record_deliveries([command for command, _ in batch])
        except BaseException as exc:  # every request of the batch gets the error (a 503, say)
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), receipt in zip(batch, receipts, strict=True):
            future.set_result(receipt)
