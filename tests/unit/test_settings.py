"""Settings from the environment: defaults, parsing, and errors that say what to fix."""

from __future__ import annotations

import base64

import pytest

from infrastructure.dev_credentials import with_credentials
from infrastructure.eventstore import eventsourcing_env
from infrastructure.settings import Settings, SettingsError, configured_keys


def test_the_default_is_an_sqlite_file_in_the_working_directory():
    settings = Settings.from_env({})
    assert (settings.dialect, settings.sqlite_path) == ("sqlite", "drx.sqlite3")
    assert settings.webhook_secrets == ()


def test_secrets_and_keys_split_on_spaces_and_commas():
    settings = Settings.from_env(
        {"DRX_WEBHOOK_SECRETS": "whsec_a whsec_b,whsec_c", "DRX_API_KEYS": "k1, k2"}
    )
    assert settings.webhook_secrets == ("whsec_a", "whsec_b", "whsec_c")
    assert settings.api_keys == ("k1", "k2")


def test_a_postgresql_url_maps_to_the_eventsourcing_settings():
    settings = Settings.from_env(
        {"DRX_DATABASE_URL": "postgresql://drx:s%40cret@db.internal:6543/rx"}
    )
    env = eventsourcing_env(settings)
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.internal",
        "6543",
        "rx",
    )
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("drx", "s@cret")
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"
    assert env["CREATE_TABLE"] == "n"
    assert int(env["POSTGRES_LOCK_TIMEOUT"]) > 0
    assert "s@cret" not in settings.describe_database()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DRX_DATABASE_URL": "mysql://x/y"}, "DRX_DATABASE_URL"),
        ({"DRX_DATABASE_URL": "postgresql://host-only"}, "DRX_DATABASE_URL"),
        ({"DRX_DATABASE_URL": "sqlite:///"}, "DRX_DATABASE_URL"),
        ({"DRX_POSTGRES_POOL_SIZE": "many"}, "DRX_POSTGRES_POOL_SIZE"),
        ({"DRX_POSTGRES_POOL_SIZE": "0"}, "DRX_POSTGRES_POOL_SIZE"),
        (
            {"DRX_DATABASE_URL": "postgresql://u@h/db", "DRX_POSTGRES_SCHEMA": "Drop Table"},
            "DRX_POSTGRES_SCHEMA",
        ),
        ({"DRX_ENCRYPTION_KEY": "not base64!"}, "DRX_ENCRYPTION_KEY"),
        ({"DRX_ENCRYPTION_KEY": base64.b64encode(b"x" * 20).decode()}, "DRX_ENCRYPTION_KEY"),
        ({"DRX_AUDIT_SIGNING_KEY": "not base64!"}, "DRX_AUDIT_SIGNING_KEY"),
        ({"DRX_AUDIT_SIGNING_KEY": base64.b64encode(b"x" * 31).decode()}, "DRX_AUDIT_SIGNING_KEY"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(environ, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_an_encryption_key_turns_on_the_stores_cipher_and_stays_out_of_reprs():
    key = base64.b64encode(bytes(range(32))).decode()
    settings = Settings.from_env(
        {"DRX_ENCRYPTION_KEY": key, "DRX_WEBHOOK_SECRETS": "whsec_x", "DRX_API_KEYS": "k1"}
    )
    env = eventsourcing_env(settings)
    assert env["CIPHER_TOPIC"] == "eventsourcing.cryptography:AESCipher"
    assert env["CIPHER_KEY"] == key
    assert key not in repr(settings)
    assert "whsec_x" not in repr(settings)
    assert "k1" not in repr(settings)
    assert "CIPHER_TOPIC" not in eventsourcing_env(Settings.from_env({}))


def test_an_audit_signing_key_is_a_32_byte_seed_kept_out_of_reprs_and_errors():
    seed = base64.b64encode(bytes(range(32))).decode()
    settings = Settings.from_env({"DRX_AUDIT_SIGNING_KEY": f" {seed} "})
    assert settings.audit_signing_key == seed
    assert seed not in repr(settings)
    wrong = base64.b64encode(bytes(range(33))).decode()
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DRX_AUDIT_SIGNING_KEY": wrong})
    assert wrong not in str(refused.value)


def test_api_key_entries_give_names_and_scopes():
    keys = configured_keys(("plain_key", "ops:drx_ops:operate+read", "aud:drx_aud:audit"))
    assert [(k.name, k.key, sorted(k.scopes)) for k in keys] == [
        ("DRX_API_KEYS[1]", "plain_key", ["audit", "operate", "read"]),
        ("ops", "drx_ops", ["operate", "read"]),
        ("aud", "drx_aud", ["audit"]),
    ]
    assert "drx_ops" not in repr(keys)  # a key never reaches a repr, so never a log line


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (("a:b:c:d",), "entry 1 must be KEY, NAME:KEY or NAME:KEY:SCOPES"),
        (("ops::read",), "entry 1 must be"),
        (
            ("k", "ops:drx_x:write"),
            "entry 2 (ops): scopes are joined by + from read, operate, audit",
        ),
        (("a:k1", "a:k2"), "two entries share a name"),
        (("a:k1", "b:k1"), "two entries share a key"),
    ],
)
def test_a_malformed_api_key_entry_is_refused_without_echoing_the_key(entries, says):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DRX_API_KEYS": ",".join(entries)})
    assert says in str(refused.value)
    assert "drx_x" not in str(refused.value)
    assert "k1" not in str(refused.value)


def test_on_postgresql_api_keys_may_all_come_from_the_store():
    settings = Settings.from_env(
        {"DRX_DATABASE_URL": "postgresql://drx@db/rx", "DRX_WEBHOOK_SECRETS": "whsec_x"}
    )
    filled, notes = with_credentials(settings)
    assert filled.api_keys == ()
    assert notes == [
        "DRX_API_KEYS is not set: only the keys made with drx keys create are accepted"
    ]
    with pytest.raises(SettingsError, match="DRX_WEBHOOK_SECRETS must be set on PostgreSQL"):
        with_credentials(Settings.from_env({"DRX_DATABASE_URL": "postgresql://drx@db/rx"}))
