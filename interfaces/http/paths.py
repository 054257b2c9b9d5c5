"""Request paths as clients mean them: ids holding `/` or `%`, and what no id can hold."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from litestar import Litestar

from interfaces.fhir.bundles import FHIR_JSON, operation_outcome
from interfaces.fhir.bundles import PATH as FHIR_PATH
from interfaces.http.raw import send_json
from interfaces.http.webhooks import PATH as WEBHOOK_PATH


def _segments_kept_whole(raw_path: bytes) -> str:
    """The request path decoded segment by segment, with `/` and `%` inside a segment kept
    escaped (`%2F`, `%25`), so that an id holding a slash (DRx's subjects may) still routes as
    one path parameter; `path_id` decodes it. Servers disagree here: uvicorn decodes the path
    once, and the test client twice, so it is derived from the raw bytes."""
    segments = raw_path.decode("latin-1").split("/")
    return "/".join(
        unquote(segment).replace("%", "%25").replace("/", "%2F") for segment in segments
    )


def path_id(value: str) -> str:
    """A path parameter as the client meant it (see `_segments_kept_whole`)."""
    return unquote(value) if "%" in value else value


_NUL_DETAIL = "the path or query holds U+0000, which no id holds"
_NUL_REFUSED = json.dumps({"error": "invalid_parameter", "detail": _NUL_DETAIL}).encode()
# The FHIR paths answer every error in FHIR's own shape (interfaces/fhir/api.py).
_FHIR_NUL_REFUSED = json.dumps(operation_outcome(400, _NUL_DETAIL)).encode()


class RawRequestGuard(Litestar):
    """Litestar, with decisions taken on the raw request before routing: a path or query
    holding U+0000 is a 400 (no stored id holds one, and PostgreSQL cannot even compare one);
    an escaped `/` inside a path segment stays inside that segment; and a request that
    `fast_path` answers (`interfaces/http/fast_reads.py`: True when it did) is not routed, nor
    a delivery that `fast_webhook` answers (`interfaces/http/fast_webhook.py`: it gives back the
    `receive` to route with when it did not)."""

    fast_path: Callable[[Any, Any], Awaitable[bool]] | None = None
    fast_webhook: Callable[[Any, Any, Any], Awaitable[Any]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            # The test client's raw_path carries the query too; uvicorn's does not.
            raw_path: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
            if b"%00" in raw_path or b"%00" in scope.get("query_string", b""):
                if raw_path.startswith(FHIR_PATH.encode() + b"/"):
                    await send_json(send, 400, _FHIR_NUL_REFUSED, FHIR_JSON.encode())
                else:
                    await send_json(send, 400, _NUL_REFUSED)
                return
            if b"%" in raw_path:
                scope["path"] = _segments_kept_whole(raw_path)
            elif scope["path"] == WEBHOOK_PATH and self.fast_webhook is not None:
                receive = await self.fast_webhook(scope, receive, send)
                if receive is None:
                    return
            elif self.fast_path is not None and await self.fast_path(scope, send):
                return
        await super().__call__(scope, receive, send)
