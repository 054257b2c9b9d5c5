"""Migrations: applied once each, recorded, refused when an applied one was edited."""

from __future__ import annotations

import dataclasses

import pytest

import infrastructure.migrations as migrations
from infrastructure.migrations import (
    MigrationError,
    StoreNotReadyError,
    available,
    migrate,
    pending,
)
from tests.conftest import drop_schema, migrated_postgres


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
        if fresh.dialect == "sqlite":  # asking about a store that is not there creates none
            with pytest.raises(StoreNotReadyError, match="there is no store at"):
                pending(fresh)
            assert not (tmp_path / "fresh.db").exists()
        else:
            assert [m.version for m in pending(fresh)] == [
                m.version for m in available(fresh.dialect)
            ]
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
def test_serve_warns_when_postgres_runs_without_autovacuum(private_postgres):
    """On a private cluster, so that autovacuum can be turned off and on again."""
    from infrastructure.database import postgres_warnings
    from infrastructure.settings import Settings

    url = private_postgres.create_database("drx_autovacuum")
    settings = Settings(database_url=url)
    migrate(settings)
    assert postgres_warnings(settings) == []
    private_postgres.configure(autovacuum="off")
    try:
        (warning,) = postgres_warnings(settings)
        assert "autovacuum off" in warning
    finally:
        private_postgres.configure(autovacuum="on")


def test_a_sqlite_store_is_not_made_in_a_directory_that_does_not_exist(tmp_path):
    from infrastructure.settings import Settings

    missing = Settings(database_url=f"sqlite:///{tmp_path / 'no' / 'such' / 'drx.sqlite3'}")
    with pytest.raises(StoreNotReadyError, match="does not exist"):
        migrate(missing)
    assert not (tmp_path / "no").exists()


def test_the_snapshot_pruning_migration_keeps_each_prescriptions_last_one(settings, tmp_path):
    """A store migrated before snapshots were pruned (one every 8 facts, all kept) keeps only
    each prescription's last after the migration that prunes them."""
    from tests.integration.test_audit import edit, fetch

    sqlite = settings.dialect == "sqlite"
    fresh = (
        dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path / 'old.db'}")
        if sqlite
        else dataclasses.replace(settings, postgres_schema="t_old_" + settings.postgres_schema[2:])
    )
    table = "stored_snapshots" if sqlite else "drx_snapshots"
    ids = [f"{'0' * 31}{n}" for n in (1, 2)]  # two prescriptions' ids, as hex
    try:
        every = available(fresh.dialect)
        prune = next(m for m in every if m.name == "prune_snapshots")
        before = [m for m in every if m.version < prune.version]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(migrations, "available", lambda dialect: before)
            migrate(fresh)
        for originator, versions in zip(ids, ([8, 16, 24], [8]), strict=True):
            for version in versions:
                edit(
                    fresh,
                    f"INSERT INTO {table} VALUES (%s, %s, 'topic', %s)",
                    (originator, version, b"state"),
                )
        assert [m.version for m in migrate(fresh)] == [
            m.version for m in every if m.version >= prune.version
        ]
        rows = fetch(fresh, f"SELECT originator_id, originator_version FROM {table} ORDER BY 1")
        assert [(str(i).replace("-", ""), v) for i, v in rows] == [(ids[0], 24), (ids[1], 8)]
    finally:
        if fresh.dialect == "postgresql":
            drop_schema(fresh)


READ_TABLES = ("rx_prescriptions", "rx_deliveries", "rx_changes", "rx_change_heads")
INDEXES = (
    "SELECT tablename, indexname, replace(indexdef, schemaname || '.', '') FROM pg_indexes"
    " WHERE schemaname = current_schema() AND tablename LIKE 'rx%%' ORDER BY 1, 2"
)


@pytest.mark.postgres
def test_the_index_names_migration_renames_what_an_earlier_rebuild_left(postgres_url):
    """Before rebuilds renamed their copies' indexes, a swap left each under the name
    PostgreSQL gave the fresh table's copy; migration 0017 gives each its migration's name.
    (SQLite's rebuilds recreate the live indexes by their own statements.)"""
    from tests.integration.test_audit import edit, fetch

    with migrated_postgres(postgres_url) as settings:
        expected = fetch(settings, INDEXES)
    fresh = dataclasses.replace(settings, postgres_schema="t_old_" + settings.postgres_schema[2:])
    try:
        every = available(fresh.dialect)
        names = next(m for m in every if m.name == "read_index_names")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(migrations, "available", lambda dialect: every[: every.index(names)])
            migrate(fresh)
        for table in READ_TABLES:  # what a swap did before
            edit(
                fresh,
                f"CREATE TABLE {table}_rebuild (LIKE {table} INCLUDING ALL);"
                f" DROP TABLE {table}; ALTER TABLE {table}_rebuild RENAME TO {table}",
            )
        drifted = fetch(fresh, INDEXES)
        assert all("_rebuild" in name for _, name, _ in drifted)
        applied = [m.version for m in migrate(fresh)]
        assert applied == [m.version for m in every[every.index(names) :]]
        assert fetch(fresh, INDEXES) == expected
    finally:
        drop_schema(fresh)
