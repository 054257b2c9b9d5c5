"""The read API's key check: `Authorization: Bearer <key>` with a key from DRX_API_KEYS."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

# The OpenAPI security requirement of the guarded controllers (scheme defined in app.py).
BEARER: dict[str, list[str]] = {"BearerAuth": []}


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    keys: tuple[str, ...] = connection.app.state.parts.settings.api_keys
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    # Compare with every key, in constant time, so the answer's timing tells nothing.
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    if scheme.lower() != "bearer" or not any(matches):
        raise NotAuthorizedException("a valid API key is required: Authorization: Bearer <key>")
