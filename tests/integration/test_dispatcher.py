"""The subscription dispatcher against real HTTP endpoints started by the test, which verify
each signature with the standardwebhooks library: order, at least once, back-off, Retry-After,
410, 3 days of failure, pause, resume, rewind, and a slow endpoint that slows no other."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from domain import names
from domain.clock import DrivenClock, SystemClock
from domain.instants import sortable_instant
from infrastructure.subscriptions import ACTIVE, DISABLED, PAUSED, SecretBox, SubscriptionStore
from interfaces.bootstrap import bootstrap
from interfaces.dispatcher import Dispatcher, backoff_s, envelope, retry_after_s
from tests.helpers import LIFECYCLES, deliver, load_lifecycle, relabelled
from tests.receiver import Answer, Receiver


@pytest.fixture
def receivers():
    made = []

    def make(**options):
        receiver = Receiver(**options)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def dispatching(parts):
    started = []

    def start(clock=None, timeout_s=2.0, leading=lambda: True):
        dispatcher = Dispatcher(
            parts.subscriptions,
            parts.hub,
            leading,
            clock or SystemClock(),
            timeout_s=timeout_s,
            refresh_s=0.05,
            first_backoff_s=0.05,  # the test's back-off: 50 ms, doubling
        )
        dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        dispatcher.stop()


def subscribe(parts, receiver, **options):
    subscription, secret = parts.subscriptions.create(receiver.url, **options)
    receiver.secret = secret
    return subscription


def deliver_some(parts, tag="a", lifecycles=2):
    for path in LIFECYCLES[:lifecycles]:
        for event in relabelled(load_lifecycle(path), tag):
            deliver(parts.prescriptions, event)
    parts.projector.catch_up()


def feed_positions(parts, after=0, where=None):
    rows = parts.feed.after(after, 10_000, where or parts.subscriptions.all()[0].filter)
    return [row.position for row in rows]


def test_every_matching_change_arrives_signed_in_order_with_the_feeds_body(
    parts, receivers, dispatching
):
    receiver = receivers()
    subscription = subscribe(parts, receiver)
    dispatching()
    deliver_some(parts)
    expected = feed_positions(parts, subscription.position)
    receiver.wait_for(len(expected))
    time.sleep(0.2)  # nothing more comes
    assert receiver.positions() == expected
    assert receiver.refused_signatures == 0
    rows = {row.position: row for row in parts.feed.after(0, 10_000)}
    for got in receiver.received:
        row = rows[got.payload["data"]["position"]]
        assert got.payload["type"] == row.type
        assert got.payload["timestamp"] == row.recorded_at
        assert envelope(row) == envelope(row)  # the body is the stored change, not re-encoded
        assert got.webhook_id == f"msg_{subscription.id}_{row.position}"
    assert parts.subscriptions.get(subscription.id).position == expected[-1]


def test_a_filtered_subscription_gets_only_what_it_asked_for(parts, receivers, dispatching):
    receiver = receivers()
    subscription = subscribe(
        parts, receiver, types=[names.PRESCRIPTION_CHANGED], statuses=["shipped", "delivered"]
    )
    dispatching()
    deliver_some(parts, lifecycles=len(LIFECYCLES))
    expected = feed_positions(parts, subscription.position, subscription.filter)
    assert expected
    receiver.wait_for(len(expected))
    time.sleep(0.2)
    assert receiver.positions() == expected
    assert {r.payload["data"]["state"]["status"] for r in receiver.received} <= {
        "shipped",
        "delivered",
    }


def test_failures_are_retried_in_order_honouring_retry_after_and_timeouts(
    parts, receivers, dispatching, caplog
):
    caplog.set_level(logging.INFO)

    def answer(n):
        if n < 2:
            return Answer(503, retry_after="1")
        if n < 4:
            return Answer(200, delay_s=2.5)  # over the dispatcher's timeout: no answer in time
        if n == 4:
            return Answer(500)
        return Answer(200)

    receiver = receivers(answer=answer)
    subscription = subscribe(parts, receiver)
    dispatching(timeout_s=1.0)
    deliver_some(parts, lifecycles=1)
    expected = feed_positions(parts, subscription.position)
    receiver.wait_for(len(expected) + 2, timeout_s=30)  # the two timed-out ones came through too
    time.sleep(0.3)
    got = receiver.positions()
    # The timed-out attempts were answered 200 after the dispatcher gave up: the same change,
    # with the same webhook-id, came again (at least once); otherwise in order, none skipped.
    assert got[0] == got[1] == got[2] == expected[0], (got[:8], expected[:8])
    assert list(dict.fromkeys(got)) == expected
    assert len({r.webhook_id for r in receiver.received[:3]}) == 1
    attempts = parts.subscriptions.attempts(subscription.id, 100, None)[::-1]
    assert [(a.status, a.error) for a in attempts[:6]] == [
        (503, "HTTP 503"),
        (503, "HTTP 503"),
        (None, "no answer in time"),
        (None, "no answer in time"),
        (500, "HTTP 500"),
        (200, None),
    ]
    # What the failures logged names the subscription and the endpoint's host, never its
    # secret or the URL's path (which may hold a token).
    assert "delivery to http://127.0.0.1 failed" in caplog.text
    assert receiver.secret not in caplog.text
    assert "/hook" not in caplog.text
    # Retry-After: 1 was honoured: the second attempt came about a second after the first.
    first, second = (datetime.fromisoformat(a.at) for a in attempts[:2])
    assert second - first >= timedelta(seconds=0.9)


def test_a_410_disables_the_subscription_at_once_and_a_resume_goes_on(
    parts, receivers, dispatching
):
    gone = {"yes": True}
    receiver = receivers(answer=lambda n: Answer(410 if gone["yes"] else 200))
    subscription = subscribe(parts, receiver)
    dispatching()
    deliver_some(parts, lifecycles=1)
    deadline = time.monotonic() + 10
    while parts.subscriptions.get(subscription.id).state != DISABLED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    assert receiver.requests == 1  # no more after the 410
    stored = parts.subscriptions.get(subscription.id)
    assert stored.disabled_reason == "the endpoint answered 410 Gone"
    assert stored.position == subscription.position
    gone["yes"] = False
    parts.subscriptions.set_state(subscription.id, "active")
    expected = feed_positions(parts, subscription.position)
    receiver.wait_for(len(expected))
    assert receiver.positions() == expected


def test_three_days_of_failures_disable_it(parts, receivers, dispatching):
    clock = DrivenClock(datetime(2030, 1, 1, tzinfo=UTC))
    receiver = receivers(answer=lambda n: Answer(500))
    subscription = subscribe(parts, receiver)
    dispatching(clock=clock)
    deliver_some(parts, lifecycles=1)
    deadline = time.monotonic() + 10

    def recorded():
        return len(parts.subscriptions.attempts(subscription.id, 100, None))

    while recorded() < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for n in range(3):  # retries come as the back-off runs out, the first failure still open
        clock.advance(timedelta(hours=23))
        while recorded() < n + 2:  # each attempt recorded before the clock moves again
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert parts.subscriptions.get(subscription.id).state != DISABLED  # 69 hours
    clock.advance(timedelta(hours=4))
    while parts.subscriptions.get(subscription.id).state != DISABLED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "3 days" in parts.subscriptions.get(subscription.id).disabled_reason


def test_pause_keeps_the_position_resume_goes_on_and_rewind_sends_again_with_new_ids(
    parts, receivers, dispatching
):
    receiver = receivers()
    subscription = subscribe(parts, receiver)
    dispatching()
    parts.subscriptions.set_state(subscription.id, "paused")
    time.sleep(0.2)  # a pause is taken up at the dispatcher's next look (refresh_s)
    deliver_some(parts, lifecycles=1)
    time.sleep(0.5)
    assert receiver.requests == 0
    assert parts.subscriptions.get(subscription.id).state == PAUSED
    parts.subscriptions.set_state(subscription.id, "active")
    expected = feed_positions(parts, subscription.position)
    receiver.wait_for(len(expected))
    middle = expected[len(expected) // 2]
    parts.subscriptions.rewind(subscription.id, middle)
    again = [p for p in expected if p > middle]
    receiver.wait_for(len(expected) + len(again))
    assert receiver.positions() == expected + again
    replayed = receiver.received[len(expected) :]
    assert all(r.webhook_id.endswith("_r1") for r in replayed)


def test_a_slow_endpoint_never_slows_another_subscription(parts, receivers, dispatching):
    slow = receivers(answer=lambda n: Answer(200, delay_s=3))
    quick = receivers()
    subscribe(parts, slow)
    fast = subscribe(parts, quick)
    dispatching(timeout_s=2.0)
    started = time.monotonic()
    deliver_some(parts, lifecycles=1)
    expected = feed_positions(parts, fast.position)
    quick.wait_for(len(expected), timeout_s=5)
    assert time.monotonic() - started < 2.0  # while the slow one has had at most one answer
    assert len(slow.received) == 0


def test_secrets_are_stored_encrypted_with_the_key_and_read_back(parts):
    key = base64.b64encode(os.urandom(32)).decode()
    store = SubscriptionStore(parts.read_db, parts.feed, SecretBox(key))
    subscription, secret = store.create("https://example.internal/hook")
    (stored,) = parts.read_db.query(
        "SELECT secret FROM drx_subscriptions WHERE id = %s", (subscription.id,)
    )
    assert secret not in stored[0]
    assert stored[0].startswith("aesgcm:")
    assert store.secret(store.get(subscription.id)) == secret
    with pytest.raises(RuntimeError, match="DRX_ENCRYPTION_KEY"):
        SubscriptionStore(parts.read_db, parts.feed, SecretBox("")).secret(subscription)


def test_a_secret_that_cannot_be_read_disables_the_subscription_saying_why(
    parts, receivers, dispatching
):
    key = base64.b64encode(os.urandom(32)).decode()
    sealed = SubscriptionStore(parts.read_db, parts.feed, SecretBox(key))
    receiver = receivers()
    subscription, _ = sealed.create(receiver.url)  # stored encrypted; the dispatcher has no key
    dispatching()
    deadline = time.monotonic() + 5
    while parts.subscriptions.get(subscription.id).state != DISABLED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "DRX_ENCRYPTION_KEY" in parts.subscriptions.get(subscription.id).disabled_reason
    assert receiver.requests == 0


def test_back_off_doubles_to_ten_minutes_and_retry_after_is_read():
    import random

    rng = random.Random(1)
    waits = [backoff_s(n, None, rng) for n in range(1, 15)]
    assert 0.75 <= waits[0] <= 1.0
    assert all(w <= 600 for w in waits)
    assert waits[-1] >= 450
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_s("120", now) == 120
    assert retry_after_s("Tue, 01 Jan 2030 00:01:00 GMT", now) == 60
    assert retry_after_s("soon", now) is None
    assert backoff_s(1, 7200, rng) == 3600  # at most an hour


def test_a_stopped_dispatcher_gives_up_its_lead_at_once(settings):
    """The next dispatcher on the database (a standby, or the next `drx serve`) takes over as
    soon as one stops, not when its process ends."""
    with bootstrap(settings) as first, bootstrap(settings) as second:
        assert first.dispatcher.leading()
        assert not second.dispatcher.leading()
        first.dispatcher.stop()
        assert second.dispatcher.leading()


def test_a_2xx_ends_the_failure_streak_before_it_is_written(parts, receivers, dispatching):
    """Every change fails once, then is taken: however long that goes on, no streak lasts
    3 days (each success ends it, whether or not its row was written before the next failure)."""
    clock = DrivenClock(datetime(2030, 1, 1, tzinfo=UTC))
    receiver = receivers(answer=lambda n: Answer(500 if n % 2 == 0 else 200))
    subscription = subscribe(parts, receiver)
    deliver_some(parts, lifecycles=3)
    expected = feed_positions(parts)
    assert len(expected) > 15  # 5 hours a failure: more than 3 days of them
    dispatching(clock=clock)
    deadline = time.monotonic() + 30
    while len(receiver.received) < len(expected):
        assert time.monotonic() < deadline
        stored = parts.subscriptions.get(subscription.id)
        assert stored.state != DISABLED, stored.disabled_reason
        assert stored.failures <= 1
        if stored.retry_at and stored.retry_at > sortable_instant(clock.now()):
            clock.advance(timedelta(hours=5))  # a failure written: its retry 5 hours later
        time.sleep(0.01)
    assert receiver.positions() == expected


def test_retry_after_takes_ascii_seconds_and_every_http_date_form():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_s("\u00b2", now) is None  # "²": a digit to str.isdigit
    assert retry_after_s("Tue Jan  1 00:02:00 2030", now) == 120  # asctime
    assert retry_after_s("Tue, 01 Jan 2030 00:03:00 -0000", now) == 180
    # an endpoint's date past any datetime's range is no wait (it was a task that never
    # backed off, restarted every second as if the database were away)
    for absurd in (
        "Tue, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Tue, 99999999999999999999 Jan 2030 00:00:00 GMT",
        "Tue, 01 Jan 2030 99999999999999999999:00:00 GMT",
        "Tue, 01 Jan 2030 00:00:00 +99999999999999999999",
    ):
        assert retry_after_s(absurd, now) is None, absurd


def test_endpoints_whose_names_never_resolve_hold_up_no_other_subscription(
    parts, receivers, dispatching, monkeypatch
):
    """Eight endpoints whose host names hang in the resolver (each lookup holds a thread past
    the POST's timeout, and each retry starts another): a healthy subscription rewound to 0
    reads its changes from the database at once, in the dispatcher's own threads."""
    import socket

    real = socket.getaddrinfo

    def hanging(host, *args, **kwargs):
        if str(host).endswith(".hang.example"):
            time.sleep(4)
            raise socket.gaierror("timed out")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    receiver = receivers()
    healthy = subscribe(parts, receiver)
    for n in range(8):
        parts.subscriptions.create(f"http://h{n}.hang.example/hook")
    deliver_some(parts, lifecycles=1)
    expected = feed_positions(parts, healthy.position, healthy.filter)
    dispatching(timeout_s=0.5)
    receiver.wait_for(len(expected))
    time.sleep(1)  # the hanging lookups pile up
    parts.subscriptions.rewind(healthy.id, 0)
    started = time.monotonic()
    receiver.wait_for(2 * len(expected))
    assert time.monotonic() - started < 2


def _requests_settle(receivers_, quiet_s: float = 0.5, timeout_s: float = 10.0) -> int:
    """The receivers' request count once none came for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    count = sum(r.requests for r in receivers_)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = sum(r.requests for r in receivers_)
        if now == count:
            return count
        count = now
    raise AssertionError("the receivers never went quiet")


@pytest.mark.parametrize("lost", ["raises", "hangs"])
def test_a_lead_that_cannot_be_confirmed_stops_every_subscription_until_it_is(
    parts, receivers, dispatching, monkeypatch, lost
):
    """The lead's check raising (its connection gone, and no new one) or hanging is no lead:
    a standby may be taking it, and two dispatchers sending interleave the changes."""
    monkeypatch.setattr("interfaces.dispatcher.LEAD_CHECK_S", 0.3)
    confirmed = threading.Event()
    confirmed.set()

    def leading():
        if confirmed.is_set():
            return True
        if lost == "raises":
            raise OSError("connection to server failed")
        time.sleep(1)
        return True

    receiver = receivers()
    subscribe(parts, receiver)
    deliver_some(parts, "a", lifecycles=1)
    dispatching(leading=leading)
    receiver.wait_for(len(feed_positions(parts)))
    confirmed.clear()
    time.sleep(0.6)  # a check or two
    before = _requests_settle([receiver])
    deliver_some(parts, "b", lifecycles=1)
    time.sleep(1.0)
    assert receiver.requests == before  # nothing sent while the lead is not confirmed
    confirmed.set()
    receiver.wait_for(len(feed_positions(parts)))  # and everything once it is again
    assert receiver.positions() == feed_positions(parts)


def test_the_lead_is_checked_while_database_calls_hang(parts, receivers, dispatching, monkeypatch):
    """Writes that hang (a half-open network) fill the dispatcher's database threads; the
    lead's check has its own, and finds the lead lost all the same."""
    monkeypatch.setattr("interfaces.dispatcher.LEAD_CHECK_S", 0.3)
    hang, released, still_leading = threading.Event(), threading.Event(), threading.Event()
    still_leading.set()
    real = parts.subscriptions.record

    def record(*args, **kwargs):
        if hang.is_set():
            released.wait(10)  # the network went half-open
        return real(*args, **kwargs)

    parts.subscriptions.record = record
    made = [receivers() for _ in range(5)]
    for receiver in made:
        subscribe(parts, receiver)
    deliver_some(parts, "a", lifecycles=1)
    dispatching(leading=still_leading.is_set)
    for receiver in made:
        receiver.wait_for(len(feed_positions(parts)))
    hang.set()
    deliver_some(parts, "b", lifecycles=1)
    time.sleep(0.5)  # each subscription's background write now hangs
    still_leading.clear()
    time.sleep(0.5)
    before = _requests_settle(made)
    deliver_some(parts, "c", lifecycles=1)
    time.sleep(1.0)
    try:
        assert sum(r.requests for r in made) == before
    finally:
        hang.clear()
        released.set()


def _wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_resume_of_a_failing_subscription_starts_its_streak_and_its_wait_anew(
    parts, receivers, dispatching
):
    """Resuming an active subscription that keeps failing forgets its failures: its running
    task must not write its old streak back (3 days counted from before the resume), nor
    keep waiting out an endpoint's Retry-After of an hour."""
    clock = DrivenClock(datetime(2030, 1, 1, tzinfo=UTC))
    up = threading.Event()
    receiver = receivers(
        answer=lambda n: Answer(200) if up.is_set() else Answer(503, retry_after="3600")
    )
    subscription = subscribe(parts, receiver)
    deliver_some(parts, lifecycles=1)
    dispatching(clock=clock)
    _wait_until(lambda: parts.subscriptions.get(subscription.id).retry_at is not None)
    clock.advance(timedelta(hours=71))  # failing for almost 3 days
    _wait_until(lambda: receiver.requests >= 2)
    _wait_until(lambda: parts.subscriptions.get(subscription.id).failures >= 2)
    parts.subscriptions.set_state(subscription.id, "active")  # the operator resumes it
    requests = receiver.requests
    _wait_until(lambda: receiver.requests > requests)  # at once, not an hour later
    clock.advance(timedelta(hours=2))  # another failure, 73 h after the first
    _wait_until(lambda: receiver.requests > requests + 1)
    time.sleep(0.2)
    stored = parts.subscriptions.get(subscription.id)
    assert stored.state == ACTIVE, stored.disabled_reason
    assert stored.failing_since >= sortable_instant(datetime(2030, 1, 3, 23, tzinfo=UTC))
    up.set()
    clock.advance(timedelta(hours=1))
    expected = feed_positions(parts, subscription.position)
    receiver.wait_for(len(expected))
    assert receiver.positions() == expected


def test_the_attempts_log_of_every_subscription_is_trimmed_however_their_writes_interleave(
    parts, monkeypatch
):
    """Two subscriptions writing in turn: with one count of writes for both, the count's
    round numbers always fell on the same one, and the other's log grew without end."""
    from infrastructure import subscriptions as module
    from infrastructure.subscriptions import AttemptRecord

    monkeypatch.setattr(module, "KEPT_ATTEMPTS", 5)
    monkeypatch.setattr(module, "PRUNE_EVERY", 4)
    made = [parts.subscriptions.create(f"http://127.0.0.1:9/{n}")[0] for n in range(2)]
    for turn in range(1, 41):
        for index, subscription in enumerate(made):
            at = sortable_instant(datetime(2030, 1, 1, tzinfo=UTC))
            attempt = AttemptRecord(turn, f"msg_{turn}", 200, None, 1, at)
            made[index] = parts.subscriptions.record(subscription, turn, [attempt])
    for subscription in made:
        kept = parts.subscriptions.attempts(subscription.id, 100, None)
        assert 5 <= len(kept) <= 5 + 4, (subscription.id, len(kept))
