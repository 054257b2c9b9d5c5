"""`create_app(settings)`: the one place the HTTP application is wired."""

from __future__ import annotations

from typing import Any, cast

from litestar import Litestar
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.routes import HTTPRoute

from infrastructure.settings import Settings
from interfaces.bootstrap import Parts
from interfaces.console.routes import console_router
from interfaces.fhir.api import FhirController, in_fhirs_shape
from interfaces.http import webhooks
from interfaces.http.access import access_logging
from interfaces.http.api_page import assets_router, openapi_config
from interfaces.http.audit import AuditController
from interfaces.http.changes import ChangeController
from interfaces.http.deliveries import DeliveryController
from interfaces.http.errors import handle_exception
from interfaces.http.fast_reads import FastReads
from interfaces.http.fast_webhook import FastWebhook
from interfaces.http.health import HealthController, ProjectionController
from interfaces.http.metrics import WebhookMetrics, webhook_timing
from interfaces.http.paths import RawRequestGuard
from interfaces.http.prescriptions import PrescriptionController
from interfaces.http.subscriptions import SubscriptionController


def create_app(settings: Settings, *, run_projections: bool = True) -> Litestar:
    """The service's HTTP application over an already migrated store (`interfaces.bootstrap`
    builds its parts, which live as long as it: `app.state.parts`).

    With `run_projections`, this process competes for the projections' leadership and runs them
    in a background thread while it leads; `drx serve` runs them in a process of their own.
    """
    parts = Parts(settings)
    metrics = WebhookMetrics(parts.intake_tally)
    # What starts and stops with the app: an ASGI host may run the lifespan more than once
    # (test clients do), so each can start again. The pools close with the process, or with
    # parts.close().
    on_startup = [
        parts.keys.start,
        parts.sign_outs.start,
        parts.access_log.start,
        parts.intake_tally.start,
        parts.async_read_db.start,
    ]
    on_shutdown = [
        parts.hub.stop,
        parts.keys.stop,
        parts.sign_outs.stop,
        parts.access_log.stop,
        parts.intake_tally.stop,
        parts.async_read_db.stop,
    ]
    if run_projections:
        on_startup += [parts.projector.start, parts.dispatcher.start]
        on_shutdown[:0] = [parts.dispatcher.stop, parts.projector.stop]
    app = RawRequestGuard(
        route_handlers=[
            webhooks.WebhookController,
            PrescriptionController,
            ChangeController,
            SubscriptionController,
            DeliveryController,
            ProjectionController,
            HealthController,
            AuditController,
            FhirController,
            assets_router(),
            console_router(),
        ],
        dependencies={
            "parts": Provide(lambda: parts, sync_to_thread=False),
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
        },
        exception_handlers={Exception: in_fhirs_shape(handle_exception)},
        middleware=[
            cast(Any, webhook_timing(metrics, webhooks.PATH)),
            cast(Any, access_logging(parts.access_log)),
        ],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        openapi_config=openapi_config(),
        # Our handler logs faults without their messages, which may quote patient data.
        logging_config=LoggingConfig(log_exceptions="never", configure_root_logger=False),
    )
    app.state.parts = parts
    app.fast_path = FastReads(parts).answer
    app.fast_webhook = FastWebhook(parts, metrics).answer
    allow_every_method(app)
    return app


def allow_every_method(app: Litestar) -> None:
    """Make OPTIONS name every method of its path. Litestar 2.25 builds a path's automatic
    OPTIONS handler with the first handler registered there and, when more handlers join the
    path, keeps it answering with that first route's methods only (`OPTIONS, POST` for
    /subscriptions, which also takes GET). The handler reads the methods from the route it was
    made for, when called: that route is given the methods of the route it now serves.
    tests/e2e/test_subscriptions.py checks the answer."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.http_methods == {"OPTIONS"}:
                for cell in getattr(handler.fn, "__closure__", None) or ():
                    if isinstance(cell.cell_contents, HTTPRoute):
                        cell.cell_contents.methods = route.methods
