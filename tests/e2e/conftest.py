"""An HTTP client on the real application, over each store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infrastructure.migrations import migrate
from tests.conftest import migrated_postgres, sqlite_settings
from tests.helpers import serving


@pytest.fixture
def client(settings) -> Iterator:
    with serving(settings) as test_client:
        yield test_client


@pytest.fixture
def store(request, tmp_path):
    """Migrated settings for the servers: a new SQLite file, or a new PostgreSQL schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        chosen = sqlite_settings(tmp_path)
        migrate(chosen)
        yield chosen
        return
    with migrated_postgres(request.getfixturevalue("postgres_url")) as chosen:
        yield chosen
