"""The console's sign-outs (infrastructure/console_sign_outs.py) on both stores."""

from __future__ import annotations

import time

import pytest

from infrastructure.console_sign_outs import SKEW_S, SignOuts, session_id


def test_a_sign_out_is_kept_until_its_session_would_have_ended(read_db):
    now = int(time.time())
    writer, reader = SignOuts(read_db), SignOuts(read_db)
    writer.record("csrf-past", now - SKEW_S - 1)  # ended, on any host's clock: not kept
    writer.record("csrf-on", now + 3600)
    assert writer.ended("csrf-on")  # at once where it was signed out
    assert not reader.ended("csrf-on")
    reader._reload()
    assert reader.ended("csrf-on")
    assert not reader.ended("csrf-past")
    assert not reader.ended("another session")
    writer.record("csrf-later", now + 60)  # each sign-out deletes the rows past their end
    rows = read_db.query("SELECT session_id FROM drx_console_sign_outs ORDER BY session_id")
    assert sorted(str(r[0]) for r in rows) == sorted(
        [session_id("csrf-on"), session_id("csrf-later")]
    )
    writer.record("csrf-on", now + 3600)  # twice (two tabs): still one row, no error
    assert len(read_db.query("SELECT session_id FROM drx_console_sign_outs")) == 2


def test_the_last_copy_stands_while_the_database_cannot_be_read(read_db, monkeypatch, caplog):
    sign_outs = SignOuts(read_db)
    sign_outs.record("csrf-on", int(time.time()) + 3600)

    def away(*_: object) -> None:
        raise ConnectionError("the database is away")

    monkeypatch.setattr(read_db, "query", away)
    sign_outs._reload()
    sign_outs._reload()
    assert sign_outs.ended("csrf-on")
    said = [r.getMessage() for r in caplog.records if "sign-outs" in r.getMessage()]
    assert len(said) == 1  # said once, not every second
    monkeypatch.undo()
    sign_outs._reload()
    assert sign_outs.ended("csrf-on")


def test_a_reload_that_read_the_table_before_a_sign_out_does_not_undo_it(read_db, monkeypatch):
    sign_outs = SignOuts(read_db)
    monkeypatch.setattr(read_db, "query", lambda *_: [])  # what the table held a moment before
    sign_outs.record("csrf-on", int(time.time()) + 3600)
    sign_outs._reload()
    assert sign_outs.ended("csrf-on")


def test_a_sign_out_that_cannot_be_written_ends_nothing(read_db, monkeypatch):
    sign_outs = SignOuts(read_db)

    def away(*_: object, **__: object) -> None:
        raise ConnectionError("the database is away")

    monkeypatch.setattr(read_db, "transaction", away)
    with pytest.raises(ConnectionError):
        sign_outs.record("csrf-on", int(time.time()) + 3600)
    assert not sign_outs.ended("csrf-on")
