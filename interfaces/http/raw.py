"""Answers sent straight on ASGI, before or beside the framework (the raw-request guard, the fast
paths, the access log's refusal): one JSON body, its length and its media type."""

from __future__ import annotations

from typing import Any

JSON = b"application/json"


async def send_json(
    send: Any,
    status: int,
    body: bytes,
    media: bytes = JSON,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
