"""The API's key check: `Authorization: Bearer <key>`, a key from DRX_API_KEYS or one made with
`drx keys create`, holding the path's scope (`read`, `operate` or `audit`; contract, HTTP).

No valid key is a 401; a valid key without the scope a 403 `forbidden`. The key's name stays on
the request (`key_name`) for the PHI access log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from interfaces.http.errors import ProblemError
from interfaces.http.schemas import Problem

# The OpenAPI security requirement of the guarded controllers (scheme defined in api_page.py).
BEARER: dict[str, list[str]] = {"BearerAuth": []}

# The answers every guarded path documents.
KEY_REFUSALS = {
    401: ResponseSpec(Problem, description="no valid API key"),
    403: ResponseSpec(Problem, description="the key does not have this path's scope"),
}

KEY_NAME = "drx.key_name"  # where, in the request's state, the key's name is kept

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def requires(scope: str) -> Guard:
    """The guard of the paths that need `scope`."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
        key = connection.app.state.parts.keys.find(token.strip()) if token.strip() else None
        if scheme.lower() != "bearer" or key is None:
            raise NotAuthorizedException("a valid API key is required: Authorization: Bearer <key>")
        connection.scope.setdefault("state", {})[KEY_NAME] = key.name
        if scope not in key.scopes:
            raise ProblemError(
                403, "forbidden", f"the key {key.name} does not have the {scope} scope"
            )

    guard.__name__ = f"requires_{scope}"
    return guard


def key_name(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The name of the key the request was let in with (None before the guard ran)."""
    name: str | None = connection.scope.get("state", {}).get(KEY_NAME)
    return name


require_read = requires("read")
require_operate = requires("operate")
require_audit = requires("audit")
