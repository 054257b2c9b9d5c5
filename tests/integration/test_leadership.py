"""The lead of a role passes to a standby the moment its holder lets go."""

from __future__ import annotations

from infrastructure.leadership import leadership_for


def test_a_released_lead_is_free_at_once_even_before_the_connection_is_gone(settings):
    """On PostgreSQL a closed connection's advisory lock is freed only once the server's backend
    has exited, a moment after the client closes; releasing must not depend on that moment. The
    holder's close is held back here, as a slow backend exit would be."""
    holder, standby = leadership_for(settings, "probe"), leadership_for(settings, "probe")
    assert holder.acquire()
    assert not standby.acquire()
    held = getattr(holder, "_conn", None) or getattr(holder, "_file", None)
    kept_open = held.close
    held.close = lambda: None  # the connection (or file) outlives its release
    try:
        holder.release()
        assert standby.acquire()
    finally:
        standby.release()
        kept_open()
