"""Migrations: applied once each, recorded, refused when an applied one was edited."""

from __future__ import annotations

import dataclasses

import pytest

import infrastructure.migrations as migrations
from infrastructure.migrations import MigrationError, available, migrate, pending
from tests.conftest import drop_schema


def test_migrations_are_applied_once_and_recorded(settings):
    # The fixture migrated already: nothing is pending and a second run applies nothing.
    assert pending(settings) == []
    assert migrate(settings) == []


def test_a_fresh_store_gets_every_migration(settings, tmp_path):
    fresh = (
        dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        if settings.dialect == "sqlite"
        else dataclasses.replace(
            settings, postgres_schema="t_fresh_" + settings.postgres_schema[2:]
        )
    )
    try:
        assert [m.version for m in pending(fresh)] == [m.version for m in available(fresh.dialect)]
        assert [m.version for m in migrate(fresh)] == [m.version for m in available(fresh.dialect)]
        assert pending(fresh) == []
    finally:
        if fresh.dialect == "postgresql":
            drop_schema(fresh)


def test_an_applied_migration_that_was_edited_is_refused(settings, monkeypatch):
    real = available(settings.dialect)
    edited = [dataclasses.replace(real[0], sql=real[0].sql + "\n-- edited\n"), *real[1:]]
    monkeypatch.setattr(migrations, "available", lambda dialect: edited)
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(settings)


@pytest.mark.postgres
def test_serve_warns_when_postgres_will_plan_without_statistics(postgres_url):
    from infrastructure.database import connect_postgres, postgres_warnings
    from tests.conftest import migrated_postgres

    with migrated_postgres(postgres_url) as settings:
        with connect_postgres(settings) as conn:
            autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]
        warnings = postgres_warnings(settings)
    assert [("autovacuum off" in w) for w in warnings] == ([True] if autovacuum == "off" else [])
