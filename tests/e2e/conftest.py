"""An HTTP client on the real application, over each store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import serving


@pytest.fixture
def client(settings) -> Iterator:
    with serving(settings) as test_client:
        yield test_client
