"""Process-wide settings of the long-running processes (web workers, the projector)."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Keep what start-up built out of the cyclic garbage collector's sight.

    After start-up a process holds a large heap of objects that live as long as it does
    (modules, the Litestar app and its schemas, pydantic's validators, the library's classes);
    every full collection walked all of them: measured 62-70 ms per web worker here, a stall
    for every request in flight and, at 300 deliveries/s, a share of the p99. `gc.freeze()`
    moves them to a permanent generation that collections skip; what is created afterwards is
    collected as before.
    """
    gc.collect()
    gc.freeze()
