"""Units of work: which aggregates one transaction reads and writes, how a batch of deliveries
shares one transaction (the group commit), and what is tried again when another writer got
there first. The web layer only calls `Intake` and `GroupCommitter`.

- A batch is loaded in one query (`AggregateLookup`, a port the recorders implement: each
  prescription from its last snapshot, so that the load does not grow with its history), handled
  command by command, and saved in one transaction. When another writer (a second web worker,
  say) moved one of its prescriptions on or stored one of its deliveries first, the store
  refuses the save (`IntegrityError`): the batch is loaded and handled again, a few times, then
  its deliveries go one at a time, each retried up to `MAX_SAVE_ATTEMPTS` times after a short
  random pause that grows, so that racing writers spread out.
- A fault in our code on one fact parks that delivery (the handlers see to it); a fault while
  storing (the store refusing one payload's encoding, say) sends the batch one at a time, and
  the delivery that still fails is parked alone.
- The group committer: concurrent webhook requests hand their delivery to one thread, which
  saves what has gathered as one batch and answers each request once its batch is durable.
  While one batch commits, the next one gathers, so batches grow with the load and a lone
  request waits for nothing but its own save. After the store fails, batches are refused at once
  for `COOLDOWN_S` (a 503 with Retry-After) instead of each waiting for the pool's timeout; the
  refusals do not prolong the pause, and the first batch after it is the store's probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)

from domain.application import Prescriptions
from domain.commands import ParkDelivery, RecordDelivery, ReplayDelivery
from domain.delivery import Delivery, Report
from domain.dry_run import ReplayPreview, dry_run_replays
from domain.errors import ConcurrencyConflictError, HistoryDamagedError, describe_fault
from domain.handlers import Command, Outcome, Receipt, handle
from domain.ids import delivery_id, prescription_id
from domain.prescription import Prescription

log = logging.getLogger(__name__)

MAX_BATCH = 100
MAX_BATCH_ATTEMPTS = 3
MAX_SAVE_ATTEMPTS = 20
_BACKOFF_BASE_S = 0.002
_BACKOFF_MAX_S = 0.1
COOLDOWN_S = 1.0
# Shorter than a sender's usual timeout, so a request is answered (503) before it gives up.
WAIT_S = 20.0


@runtime_checkable
class AggregateLookup(Protocol):
    """The given aggregates as stored, in one query: each one's last snapshot, if it has one,
    and its events after it, by aggregate and version."""

    def select_aggregates(self, ids: Sequence[UUID]) -> list[StoredEvent]: ...


class UnitOfWork:
    """The aggregates of one transaction: those `preloaded` (a batch's, read in one query), or
    each read from the store when first asked for; saved together by `commit`."""

    def __init__(
        self, app: Prescriptions, report: Report, preloaded: dict[UUID, Any] | None = None
    ) -> None:
        self.app, self.report = app, report
        self._batch = preloaded is not None
        self._known: dict[UUID, Any] = dict(preloaded or {})
        self._added: dict[UUID, Any] = {}

    def prescription(self, subject: str) -> Prescription:
        found = self._get(prescription_id(subject))
        if found is None:
            found = self._known[prescription_id(subject)] = Prescription(subject)
        assert isinstance(found, Prescription)
        return found

    def delivery(self, event_id: str) -> Delivery | None:
        found = self._get(delivery_id(event_id))
        assert found is None or isinstance(found, Delivery)
        return found

    def add(self, *aggregates: Prescription | Delivery) -> None:
        for aggregate in aggregates:
            self._added[aggregate.id] = aggregate
            self._known[aggregate.id] = aggregate  # a later command of the batch sees it

    def commit(self) -> None:
        self.app.save(*self._added.values())

    def _get(self, aggregate_id: UUID) -> Any:
        if aggregate_id in self._known or self._batch:
            return self._known.get(aggregate_id)
        try:
            found: Any = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        except OriginatorVersionError:
            raise HistoryDamagedError(str(aggregate_id)) from None  # one missing or moved
        self._known[aggregate_id] = found
        return found


class Intake:
    """Takes commands into the store, one at a time or as a batch in one transaction.
    `report` is the anti-corruption layer's digest of what a body says (`domain.delivery`)."""

    def __init__(self, app: Prescriptions, report: Report) -> None:
        if not isinstance(app.recorder, AggregateLookup):
            msg = "the application's recorder cannot load a batch's aggregates in one query"
            raise TypeError(msg)
        self.app, self.lookup, self.report = app, app.recorder, report

    def take(self, command: Command) -> Receipt:
        """One command in a transaction of its own."""
        for losses in range(MAX_SAVE_ATTEMPTS):
            _pause(losses)
            work = UnitOfWork(self.app, self.report)
            try:
                receipt = handle(work, command)
            except PersistenceError:
                raise  # the store cannot take it: 503
            except Exception as exc:  # our code, or the prescription's stored history, failed
                if not isinstance(command, RecordDelivery):  # on it: the delivery is kept
                    raise
                return self.take(ParkDelivery(command.delivery, _fault_of(exc), fault=True))
            try:
                work.commit()
            except IntegrityError:
                continue  # another writer got there first: reload and handle again
            except PersistenceError:
                raise  # the store cannot take it: 503
            except Exception as exc:  # storing this one payload failed: park it, keep it
                if not isinstance(command, RecordDelivery):
                    raise
                return self.take(ParkDelivery(command.delivery, describe_fault(exc), fault=True))
            _log_parked(receipt)
            return receipt
        raise ConcurrencyConflictError(_event_id(command))

    def dry_run(
        self, event_ids: Sequence[str], replay_of: Callable[[Delivery], ReplayDelivery]
    ) -> list[ReplayPreview]:
        """What replaying these deliveries in turn would do (`replay_of` makes a stored one's
        replay), in a unit of work that is never committed (`domain.dry_run`): nothing is saved.
        The deliveries, then their prescriptions, are read in one query each."""
        deliveries = self._aggregates(delivery_id(event_id) for event_id in event_ids)
        subjects = {delivery.subject for delivery in deliveries.values()}
        loaded = {**deliveries, **self._aggregates(prescription_id(s) for s in subjects)}
        commands = [
            replay_of(found)
            if (found := deliveries.get(delivery_id(event_id))) is not None
            else ReplayDelivery(event_id, None)
            for event_id in event_ids
        ]
        return dry_run_replays(UnitOfWork(self.app, self.report, loaded), commands)

    def take_batch(self, commands: Sequence[RecordDelivery]) -> list[Receipt]:
        """Several deliveries in one transaction (group commit), each receipt in order."""
        for losses in range(MAX_BATCH_ATTEMPTS):
            _pause(losses)
            try:
                work = UnitOfWork(self.app, self.report, self._load(commands))
                receipts = [handle(work, command) for command in commands]
                work.commit()
            except IntegrityError:
                continue
            except PersistenceError:
                raise  # the store cannot take it: every delivery of the batch is answered 503
            except Exception:  # one payload, or one prescription's history, failed: find it,
                break  # one at a time, so that the others are not answered its error
            for receipt in receipts:
                _log_parked(receipt)
            return receipts
        return [self.take(command) for command in commands]

    def _load(self, commands: Iterable[RecordDelivery]) -> dict[UUID, Any]:
        ids = {prescription_id(c.delivery.subject) for c in commands}
        ids |= {delivery_id(c.delivery.event_id) for c in commands}
        return self._aggregates(ids)

    def _aggregates(self, ids: Iterable[UUID]) -> dict[UUID, Any]:
        """The stored aggregates of these ids (those that exist), in one query."""
        loaded: dict[UUID, Any] = {}
        for stored in self.lookup.select_aggregates(sorted(set(ids))):
            event: Any = self.app.mapper.to_domain_event(stored)  # a snapshot, or an event
            loaded[event.originator_id] = event.mutate(loaded.get(event.originator_id))
        for found in loaded.values():
            if isinstance(found, Prescription):
                found.attach(self.app.facts_until)
        return loaded


def _fault_of(exc: Exception) -> str:
    """A parked delivery's reason when handling it failed."""
    if isinstance(exc, HistoryDamagedError):
        return f"the stored history of aggregate {exc} is damaged: run drx audit verify"
    return describe_fault(exc)


def _event_id(command: Command) -> str:
    return command.event_id if isinstance(command, ReplayDelivery) else command.delivery.event_id


def _pause(losses: int) -> None:
    if losses:
        time.sleep(random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**losses)))  # noqa: S311


def _log_parked(receipt: Receipt) -> None:
    """A parked delivery is logged once, once it is stored: at error level when our own code
    failed on it, else as a warning (DRx's data cannot be read)."""
    if receipt.outcome is Outcome.PARKED:
        level = logging.ERROR if receipt.fault else logging.WARNING
        log.log(level, "delivery %s parked: %s", receipt.event_id, receipt.reason)


# How the committer hands a request its receipt, or the batch's error.
Answer = Callable[[Receipt | None, BaseException | None], None]


class GroupCommitter:
    """See the module's docstring."""

    def __init__(self, intake: Intake, max_batch: int = MAX_BATCH) -> None:
        self.intake, self.max_batch = intake, max_batch
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

        self._ensure_running()
        self._queue.put((command, answer))
        return await asyncio.wait_for(future, timeout_s)

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
            receipts = self.intake.take_batch([command for command, _ in batch])
        except BaseException as exc:  # every request of the batch gets the error (a 503, say)
            if isinstance(exc, PersistenceError) and not isinstance(exc, IntegrityError):
                self._refuse_until = time.monotonic() + COOLDOWN_S
            for _, answer in batch:
                answer(None, exc)
            return
        for (_, answer), receipt in zip(batch, receipts, strict=True):
            answer(receipt, None)
