"""An HTTP client on the real application, over each store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from interfaces.http.app import create_app
from tests.helpers import AUTH


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        test_client.headers.update(AUTH)
        yield test_client
