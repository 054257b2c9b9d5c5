"""An open stream's credentials: checked at every batch and at every idle tick, more often
than heartbeats are sent, so that a revoked key (or an ended console session) ends its streams
within seconds, whatever the heartbeat's period."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from interfaces.console.routes import _live
from interfaces.http.changes import _checked


async def ticks(batches, every_s: float):
    for batch in batches:
        await asyncio.sleep(every_s)
        yield batch


def collect(iterator) -> list:
    async def run() -> list:
        return [item async for item in iterator]

    return asyncio.run(run())


def test_an_idle_stream_is_checked_at_every_tick_and_beats_only_when_due():
    checks: list[int] = []

    def allowed() -> bool:
        checks.append(1)
        return len(checks) < 12

    row = SimpleNamespace(position=7)
    batches = [[]] * 5 + [[row]] + [[]] * 10
    # A heartbeat due long after the run (ticks of 10 ms, however late they come on a busy
    # machine): every tick checked, none sent; a batch of changes goes out at once.
    out = collect(_checked(ticks(batches, 0.01), 60.0, 0.01, allowed))
    assert len(checks) == 12  # every batch and every idle tick, until refused
    assert out == [[row], None]  # refused: the end, nothing sent after it
    # A heartbeat due at every tick: each idle tick is sent as one.
    checks.clear()
    out = collect(_checked(ticks(batches, 0.01), 0.0, 0.01, allowed))
    assert out == [[]] * 5 + [[row]] + [[]] * 5 + [None]


def test_the_consoles_live_stream_says_signed_out_and_ends():
    out = collect(_live(ticks([[SimpleNamespace(position=3)], [], None, [[]]], 0)))
    assert out == [
        b"retry: 5000\r\n\r\n",
        b"event: change\r\ndata: 3\r\n\r\n",
        b": heartbeat\r\n\r\n",
        b"event: signed-out\r\ndata: {}\r\n\r\n",
    ]
