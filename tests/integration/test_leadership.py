"""The lead of a role passes to a standby the moment its holder lets go."""

from __future__ import annotations

import psycopg
import pytest

from infrastructure.leadership import leadership_for
from tests.conftest import postgres_settings


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


@pytest.mark.postgres
def test_a_lead_on_a_silently_dropped_connection_is_given_up_before_the_server_frees_it(
    postgres_url,
):
    """What bounds a half-open lead connection (infrastructure/leadership.py): the client's
    TCP timeouts (10-15 s) under the server's keepalives on its session (60 s). (SQLite's
    lead is a flock, which dies with its process: no connection to lose.)"""
    lead = leadership_for(postgres_settings(postgres_url), "dispatcher")
    assert lead.acquire()
    try:
        conn = lead._conn
        assert conn is not None
        if conn.info.host.startswith("/"):
            pytest.skip("a Unix socket has no TCP to lose (the server reports 0 keepalives)")
        found = conn.execute(
            "SELECT current_setting('tcp_keepalives_idle'),"
            " current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count')"
        ).fetchone()
        server_s = int(found[0]) + int(found[1]) * int(found[2])
        params = dict(psycopg.conninfo.conninfo_to_dict(conn.info.dsn))
        client_s = int(params["tcp_user_timeout"]) / 1000
        idle_s = int(params["keepalives_idle"])
        idle_s += int(params["keepalives_interval"]) * int(params["keepalives_count"])
        assert max(client_s, idle_s) < server_s  # the old leader stops first
        assert server_s <= 120  # and a standby leads soon (the system's default: 2 hours)
    finally:
        lead.release()
