"""The service's configuration: read from the environment once, here and nowhere else."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_DATABASE_URL = "sqlite:///drx.sqlite3"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class PostgresLocation:
    host: str
    port: int
    user: str
    password: str
    dbname: str


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with. Tests build it directly."""

    database_url: str = DEFAULT_DATABASE_URL
    # Never in a repr, so never in a log line or a traceback's locals either.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # Base64 of a 16, 24 or 32-byte AES key: the event store's events are encrypted with it.
    encryption_key: str = field(default="", repr=False)
    # Base64 of a 32-byte Ed25519 private key seed: audit checkpoints are signed with it.
    audit_signing_key: str = field(default="", repr=False)
    # PostgreSQL tuning, with defaults for a small service; see README "PostgreSQL".
    postgres_pool_size: int = 5
    postgres_max_overflow: int = 5
    postgres_lock_timeout_s: int = 5
    postgres_connect_timeout_s: int = 3
    postgres_schema: str = "public"
    sqlite_lock_timeout_s: int = 5
    # How long a change, cancel or renewal request may stay open (DRX_REQUEST_SLA).
    request_sla_s: float = 48 * 3600
    # How long a console session lasts after its sign-in (DRX_CONSOLE_SESSION).
    console_session_s: float = 8 * 3600
    # Tables come from migrations; only tests of the library's own wiring turn this on.
    create_tables: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            database_url=env.get("DRX_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL,
            webhook_secrets=split_list(env.get("DRX_WEBHOOK_SECRETS", "")),
            api_keys=split_list(env.get("DRX_API_KEYS", "")),
            encryption_key=env.get("DRX_ENCRYPTION_KEY", "").strip(),
            audit_signing_key=env.get("DRX_AUDIT_SIGNING_KEY", "").strip(),
            postgres_pool_size=_int(env, "DRX_POSTGRES_POOL_SIZE", 5),
            postgres_max_overflow=_int(env, "DRX_POSTGRES_MAX_OVERFLOW", 5),
            postgres_lock_timeout_s=_int(env, "DRX_POSTGRES_LOCK_TIMEOUT", 5),
            postgres_schema=env.get("DRX_POSTGRES_SCHEMA", "").strip() or "public",
            request_sla_s=duration(env, "DRX_REQUEST_SLA", 48 * 3600),
            console_session_s=duration(env, "DRX_CONSOLE_SESSION", 8 * 3600),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        configured_keys(self.api_keys)
        if self.dialect not in ("sqlite", "postgresql"):
            raise SettingsError(
                "DRX_DATABASE_URL must start with sqlite:/// or postgresql:// "
                f"(got a URL with scheme {self.dialect!r})"
            )
        if self.encryption_key and _decoded_size(self.encryption_key) not in (16, 24, 32):
            raise SettingsError(
                "DRX_ENCRYPTION_KEY must be the base64 of 16, 24 or 32 random bytes "
                "(docs/operations.md, Encryption at rest, says how to make one)"
            )
        if self.audit_signing_key and _decoded_size(self.audit_signing_key) != 32:
            raise SettingsError(
                "DRX_AUDIT_SIGNING_KEY must be the base64 of a 32-byte Ed25519 private key seed "
                "(docs/operations.md, Sealed checkpoints, says how to make one)"
            )
        if self.dialect == "sqlite" and not self.database_url.startswith("sqlite:///"):
            raise SettingsError(
                "DRX_DATABASE_URL: a SQLite URL takes three slashes before a relative path "
                "(sqlite:///drx.sqlite3) and four before an absolute one (sqlite:////var/drx.db)"
            )
        if self.dialect == "sqlite" and not self.sqlite_path:
            raise SettingsError("DRX_DATABASE_URL: sqlite:///PATH needs a file path")
        if self.dialect == "postgresql":
            self.postgres  # noqa: B018 - parsing it is the check
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.postgres_schema):
                raise SettingsError(
                    "DRX_POSTGRES_SCHEMA must be a lower-case SQL identifier "
                    f"(got {self.postgres_schema!r})"
                )

    @property
    def dialect(self) -> str:
        scheme = urlsplit(self.database_url).scheme
        return "postgresql" if scheme in ("postgresql", "postgres") else scheme

    @property
    def sqlite_path(self) -> str:
        """The SQLite file, relative to the working directory unless absolute."""
        return self.database_url.removeprefix("sqlite:///")

    @property
    def postgres(self) -> PostgresLocation:
        parts = urlsplit(self.database_url)
        dbname = parts.path.lstrip("/")
        if not parts.hostname or not dbname:
            raise SettingsError(
                "DRX_DATABASE_URL must look like postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
            )
        return PostgresLocation(
            host=parts.hostname,
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=dbname,
        )

    def describe_database(self) -> str:
        """Where the store is, without the password: safe to log."""
        if self.dialect == "sqlite":
            return f"SQLite file {Path(self.sqlite_path).resolve()}"
        pg = self.postgres
        return f"PostgreSQL {pg.user}@{pg.host}:{pg.port}/{pg.dbname}"


SCOPES = ("read", "operate", "audit")


def scopes_in(text: str) -> tuple[str, ...] | None:
    """Scopes joined by `+` (`read+operate`), in their canonical order; None when one is no
    scope, or none is given."""
    asked = {scope.strip() for scope in text.split("+") if scope.strip()}
    if not asked or not asked <= set(SCOPES):
        return None
    return tuple(scope for scope in SCOPES if scope in asked)


@dataclass(frozen=True)
class ConfiguredKey:
    """One entry of DRX_API_KEYS: `KEY`, `NAME:KEY` or `NAME:KEY:SCOPES` (scopes joined by
    `+`; none given is all three). A key without a name is named by its place in the list,
    `DRX_API_KEYS[1]` for the first, so that the access log can say which key it was without
    ever showing the key."""

    name: str
    key: str = field(repr=False)
    scopes: frozenset[str]


def configured_keys(entries: tuple[str, ...]) -> list[ConfiguredKey]:
    found = []
    for place, entry in enumerate(entries, start=1):
        parts = entry.split(":")
        if len(parts) > 3 or not all(parts):
            raise SettingsError(
                f"DRX_API_KEYS entry {place} must be KEY, NAME:KEY or NAME:KEY:SCOPES"
            )
        name, key = (parts[0], parts[1]) if len(parts) > 1 else (f"DRX_API_KEYS[{place}]", parts[0])
        scopes = scopes_in(parts[2]) if len(parts) == 3 else SCOPES
        if scopes is None:
            raise SettingsError(
                f"DRX_API_KEYS entry {place} ({name}): scopes are joined by + from "
                f"{', '.join(SCOPES)}"
            )
        found.append(ConfiguredKey(name, key, frozenset(scopes)))
    names, keys = [k.name for k in found], [k.key for k in found]
    if len(set(names)) != len(names):
        raise SettingsError("DRX_API_KEYS: two entries share a name")
    if len(set(keys)) != len(keys):
        raise SettingsError("DRX_API_KEYS: two entries share a key")
    return found


def _decoded_size(key_base64: str) -> int:
    """The number of bytes a base64 key holds; 0 when it is not base64."""
    try:
        return len(base64.b64decode(key_base64, validate=True))
    except (binascii.Error, ValueError):
        return 0


def split_list(value: str) -> tuple[str, ...]:
    """Secrets and keys are separated by spaces or commas."""
    return tuple(item for item in re.split(r"[\s,]+", value) if item)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number (got {raw!r})") from None
    if value < 1:
        raise SettingsError(f"{name} must be at least 1 (got {value})")
    return value


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Seconds from `90s`, `30m`, `48h`, `2d` or a plain number of seconds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", raw.lower())
    if not found or float(found[1]) <= 0:
        raise SettingsError(
            f"{name} must be a duration such as 90s, 30m, 48h or a number of seconds (got {raw!r})"
        )
    return float(found[1]) * _UNITS[found[2]]
