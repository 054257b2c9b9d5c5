"""The ceiling for the webhook benchmark: the service's own webhook steps on the same HTTP
stack, answering 202 after the signature check, parsing and translation, without storing.

    uvicorn --factory bench.trivial_app:app   (DRX_WEBHOOK_SECRETS as for the service)

Everything a delivery costs before the store is here: uvicorn, Litestar's routing, the timing
middleware, `read_command` (the Standard Webhooks check, the envelope and fact parsing) and the
same answer body. What `bench/webhook.py` measures above this is the price of storing and
applying.
"""

from __future__ import annotations

from typing import Any, cast

from litestar import Litestar, Request, Response, post
from litestar.logging import LoggingConfig
from litestar.params import RawBody

from infrastructure.settings import Settings
from interfaces.bootstrap import Parts
from interfaces.http import webhooks
from interfaces.http.errors import handle_exception
from interfaces.http.metrics import WebhookMetrics, webhook_timing
from interfaces.http.schemas import WebhookAnswer


def app() -> Litestar:
    verifier = Parts(Settings.from_env()).verifier  # the one part it needs: no store is opened

    @post(webhooks.PATH, status_code=202)
    async def receive(request: Request[Any, Any, Any], body: RawBody) -> Response[WebhookAnswer]:
        command = webhooks.read_command(body, request.headers, verifier)
        answer = WebhookAnswer(status="accepted", event_id=command.delivery.event_id)
        return Response(answer.model_dump(exclude_none=True), status_code=202)  # type: ignore[arg-type]

    return Litestar(
        route_handlers=[receive],
        exception_handlers={Exception: handle_exception},
        middleware=[cast(Any, webhook_timing(WebhookMetrics(), webhooks.PATH))],
        logging_config=LoggingConfig(log_exceptions="never", configure_root_logger=False),
        openapi_config=None,
    )


_RAW_BODY = b'{"status":"ok"}'
_RAW_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15")]


async def raw(scope: Any, receive: Any, send: Any) -> None:
    """The read benchmark's ceiling (bench/read_api.py): a fixed JSON answer straight from
    ASGI, without a framework, to any request.

        uvicorn bench.trivial_app:raw   (with the service's options: bench/read_api.py)
    """
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _RAW_HEADERS})
    await send({"type": "http.response.body", "body": _RAW_BODY})
