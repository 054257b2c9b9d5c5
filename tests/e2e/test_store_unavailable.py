"""When the store cannot take a delivery: 503 with Retry-After, never a 2xx, never a 500."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from domain.unit_of_work import COOLDOWN_S
from infrastructure.migrations import migrate
from tests.conftest import ADMIN_URL, drop_schema, postgres_settings, sqlite_settings
from tests.helpers import AUTH, load_example, post_signed, serving, settle


def test_a_locked_sqlite_store_answers_503_with_retry_after_and_stores_nothing(tmp_path):
    settings = dataclasses.replace(sqlite_settings(tmp_path), sqlite_lock_timeout_s=1)
    migrate(settings)
    with serving(settings) as client:
        blocker = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = post_signed(client, load_example("received"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["error"] == "store_unavailable"
        # Within a second of the failure the store is not tried again: refused at once.
        assert post_signed(client, load_example("received")).status_code == 503
        assert client.get("/ready").status_code == 503
        time.sleep(COOLDOWN_S)
        # DRx retries after Retry-After, once the store is free again: it lands exactly once.
        assert post_signed(client, load_example("received")).status_code == 202
        settle(client)
        assert client.get("/prescriptions/drx_rx_7Q2M9K", headers=AUTH).json()["version"] == 1


@pytest.mark.postgres
def test_a_postgresql_store_that_disappears_answers_503_and_ready_says_so(postgres_url):
    name = f"drx_test_gone_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        settings = dataclasses.replace(
            sqlite_settings(Path("/nonexistent")),
            database_url=postgres_url.rsplit("/", 1)[0] + f"/{name}",
            postgres_pool_size=1,
            postgres_connect_timeout_s=2,
        )
        migrate(settings)
        with serving(settings) as client:
            assert post_signed(client, load_example("received")).status_code == 202
            assert client.get("/ready").status_code == 200
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            response = post_signed(client, load_example("sent"))
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
            ready = client.get("/ready")
            assert (ready.status_code, ready.json()["error"]) == (503, "store_unavailable")
            assert client.get("/health").status_code == 200
    finally:  # a failing run leaves no database behind
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_a_save_that_waits_past_the_lock_timeout_answers_503_and_stores_nothing(postgres_url):
    """The events table's lock (held by each save until it commits) is waited for no longer
    than DRX_POSTGRES_LOCK_TIMEOUT, passed to `drx_insert_events`: a stuck holder costs DRx a
    retry, not a request hanging on the webhook."""
    settings = postgres_settings(postgres_url, postgres_lock_timeout_s=1)
    migrate(settings)
    try:
        with serving(settings) as client:
            blocker = psycopg.connect(settings.database_url)
            blocker.execute(f'LOCK TABLE "{settings.postgres_schema}".drx_events IN EXCLUSIVE MODE')
            # Released after 8 s: without the timeout the delivery would wait, then land (202).
            release = threading.Timer(8, blocker.rollback)
            release.start()
            started = time.monotonic()
            try:
                response = post_signed(client, load_example("received"))
                waited = time.monotonic() - started
            finally:
                release.join()
                blocker.close()
            assert response.status_code == 503, response.text
            assert waited < 8
            assert response.json()["error"] == "store_unavailable"
            time.sleep(COOLDOWN_S)
            assert post_signed(client, load_example("received")).status_code == 202
            settle(client)
            detail = client.get("/prescriptions/drx_rx_7Q2M9K", headers=AUTH).json()
            assert detail["version"] == 1
    finally:
        drop_schema(settings)


def post_while_held(client, settings, statement: str, params=()):
    """A delivery's answer, and how long it took, while another transaction holds what
    `statement` takes (released afterwards)."""
    holder = psycopg.connect(settings.database_url)
    holder.execute(statement, params)
    try:
        started = time.monotonic()
        response = post_signed(client, load_example("received"))
        return response, time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.postgres
def test_a_vacuum_of_the_events_table_holds_no_save_off(postgres_url):
    """VACUUM and ANALYZE (autovacuum's too) hold SHARE UPDATE EXCLUSIVE on the table while
    they run. Saves once serialised on an EXCLUSIVE table lock, which conflicts with it: each
    waited for an autovacuum until the deadlock check cancelled it (up to a second), or failed
    for as long as one that is never cancelled ran (against wraparound, or by hand)."""
    settings = postgres_settings(postgres_url, postgres_lock_timeout_s=1)
    migrate(settings)
    try:
        with serving(settings) as client:
            vacuum = f'LOCK TABLE "{settings.postgres_schema}".drx_events'
            response, waited = post_while_held(
                client, settings, vacuum + " IN SHARE UPDATE EXCLUSIVE MODE"
            )
            assert response.status_code == 202, response.text
            assert waited < 1
    finally:
        drop_schema(settings)


@pytest.mark.postgres
def test_saves_still_wait_for_each_other_within_the_lock_timeout(postgres_url):
    """What keeps the notification ids in commit order: a save waits for another one that
    has not committed (here, a transaction holding the saves' advisory lock), for no longer
    than DRX_POSTGRES_LOCK_TIMEOUT."""
    settings = postgres_settings(postgres_url, postgres_lock_timeout_s=1)
    migrate(settings)
    try:
        with serving(settings) as client:
            response, waited = post_while_held(
                client,
                settings,
                "SELECT pg_advisory_xact_lock(1146247236, hashtext(%s))",
                (settings.postgres_schema,),
            )
            assert response.status_code == 503, response.text
            assert 1 <= waited < 1.8  # once: a lock wait that timed out is not tried again
            time.sleep(COOLDOWN_S)
            assert post_signed(client, load_example("received")).status_code == 202
    finally:
        drop_schema(settings)
