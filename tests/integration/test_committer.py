"""The group committer on real stores: awaited receipts, errors and timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest
from eventsourcing.persistence import OperationalError

from domain.commands import RecordDelivery
from domain.handlers import Outcome
from domain.unit_of_work import COOLDOWN_S, GroupCommitter
from tests.helpers import LIFECYCLES, command_for, is_stored, load_lifecycle


def lifecycle_commands() -> list[RecordDelivery]:
    commands = [command_for(e) for e in load_lifecycle(LIFECYCLES[0])["events"]]
    assert all(isinstance(c, RecordDelivery) for c in commands)
    return commands  # type: ignore[return-value]


@pytest.fixture
def committer(intake):
    committer = GroupCommitter(intake)
    yield committer
    committer.stop()


def test_concurrent_awaits_are_each_answered_once_their_batch_is_is_stored(
    prescriptions, committer
):
    commands = lifecycle_commands()

    async def deliver_all():
        return await asyncio.gather(*(committer.submit_async(c) for c in commands + commands[:2]))

    receipts = asyncio.run(deliver_all())
    outcomes = [r.outcome for r in receipts]
    assert outcomes.count(Outcome.ACCEPTED) == len(commands)
    assert outcomes.count(Outcome.DUPLICATE) == 2
    assert [r.event_id for r in receipts] == [c.delivery.event_id for c in commands + commands[:2]]
    assert all(is_stored(prescriptions, c.delivery.event_id) for c in commands)


def test_an_await_gets_its_batch_error(prescriptions, intake, committer, monkeypatch):
    def down(_commands):
        raise OperationalError("the store is down")

    monkeypatch.setattr(intake, "take_batch", down)
    with pytest.raises(OperationalError):
        asyncio.run(committer.submit_async(lifecycle_commands()[0]))
    assert committer.store_recently_failed


def test_an_await_gives_up_after_its_timeout_and_the_late_answer_is_dropped(
    prescriptions, intake, committer, monkeypatch
):
    real = intake.take_batch

    def slow(commands):
        time.sleep(0.3)
        return real(commands)

    monkeypatch.setattr(intake, "take_batch", slow)
    command = lifecycle_commands()[0]

    async def impatient():
        with pytest.raises(TimeoutError):
            await committer.submit_async(command, timeout_s=0.05)
        await asyncio.sleep(0.5)  # the batch's late answer arrives on a settled future

    asyncio.run(impatient())
    # Stored all the same: a sender that gave up gets 200 duplicate on its retry.
    assert is_stored(prescriptions, command.delivery.event_id)


def test_the_pause_after_a_failure_ends_while_deliveries_keep_coming(
    prescriptions, intake, committer, monkeypatch
):
    """The store fails once; deliveries keep arriving without a pause (DRx flushing a backlog)
    and are refused meanwhile. The refusals must not prolong the pause: the first batch after
    it is tried, and lands."""
    real, failures = intake.take_batch, []

    def fails_once(commands):
        if not failures:
            failures.append(time.monotonic())
            raise OperationalError("the store is down")
        return real(commands)

    monkeypatch.setattr(intake, "take_batch", fails_once)
    commands = lifecycle_commands()

    async def keep_sending():
        deadline = time.monotonic() + COOLDOWN_S * 4
        while time.monotonic() < deadline:
            try:
                return await committer.submit_async(commands[0]), time.monotonic()
            except OperationalError:
                await asyncio.sleep(0.005)
        return None, time.monotonic()

    receipt, landed_at = asyncio.run(keep_sending())
    assert receipt is not None
    assert receipt.outcome is Outcome.ACCEPTED
    assert landed_at - failures[0] < COOLDOWN_S + 0.5
    assert not committer.store_recently_failed


def test_a_delivery_for_a_damaged_history_is_parked_and_its_batch_goes_on(
    prescriptions, committer, settings
):
    """One stored event of a prescription gone: its next delivery is kept (parked, naming
    the damage), not the batch's error, which every other delivery of the batch was answered
    (a 500), DRx's retries of it failing each batch they landed in."""
    from tests.integration.test_audit import edit, key

    damaged = [command_for(e) for e in load_lifecycle(LIFECYCLES[1])["events"]]
    subject = damaged[0].delivery.subject
    for command in damaged[:3]:
        asyncio.run(committer.submit_async(command))
    deleted = edit(
        settings,
        "DELETE FROM {events} WHERE originator_id = %s AND originator_version = 2",
        (key(settings, subject),),
    )
    assert deleted == 1
    healthy = lifecycle_commands()

    async def deliver_all():
        return await asyncio.gather(
            *(committer.submit_async(c) for c in [*healthy[:3], damaged[3], *healthy[3:]])
        )

    receipts = asyncio.run(deliver_all())
    by_id = {r.event_id: r for r in receipts}
    assert all(by_id[c.delivery.event_id].outcome is Outcome.ACCEPTED for c in healthy)
    parked = by_id[damaged[3].delivery.event_id]
    assert parked.outcome is Outcome.PARKED
    assert "damaged" in parked.reason
    assert is_stored(prescriptions, damaged[3].delivery.event_id)
