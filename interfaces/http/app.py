"""`create_app(settings)`: the one place the HTTP application is wired."""

from __future__ import annotations

from typing import Any, cast

from litestar import Litestar
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from domain.service import Prescriptions
from infrastructure.eventstore import open_prescriptions
from infrastructure.projections import projection_runner
from infrastructure.readmodel import ReadModel
from infrastructure.readstore import open_read_database
from infrastructure.settings import Settings
from interfaces.drx.signature import SignatureVerifier
from interfaces.http import webhooks
from interfaces.http.committer import GroupCommitter
from interfaces.http.deliveries import DeliveryController
from interfaces.http.errors import STORE_UNAVAILABLE, handle_exception
from interfaces.http.health import HealthController, ProjectionController
from interfaces.http.metrics import WebhookMetrics, webhook_timing
from interfaces.http.paths import RawRequestGuard
from interfaces.http.prescriptions import PrescriptionController
from interfaces.http.services import Services


def build_services(settings: Settings, prescriptions: Prescriptions | None = None) -> Services:
    app = prescriptions or open_prescriptions(settings)
    read_db = open_read_database(settings)
    runner = projection_runner(app, read_db, settings)
    return Services(
        settings=settings,
        prescriptions=app,
        verifier=SignatureVerifier(settings.webhook_secrets),
        read_db=read_db,
        read_model=ReadModel(read_db),
        projections=runner,
        metrics=WebhookMetrics(),
        committer=GroupCommitter(app, STORE_UNAVAILABLE),
    )


def create_app(settings: Settings, *, run_projections: bool = True) -> Litestar:
    """The service's HTTP application over an already migrated store.

    With `run_projections`, this process competes for the projections' leadership and runs them
    in a background thread while it leads (every worker does; one leads).
    """
    services = build_services(settings)
    on_startup = [services.projections.start] if run_projections else []
    app = RawRequestGuard(
        route_handlers=[
            webhooks.WebhookController,
            PrescriptionController,
            DeliveryController,
            ProjectionController,
            HealthController,
        ],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        exception_handlers={Exception: handle_exception},
        middleware=[cast(Any, webhook_timing(services.metrics, webhooks.PATH))],
        on_startup=on_startup,
        # Only the runner stops with the app: an ASGI host may run the lifespan more than once
        # (test clients do). The pools close with the process, or with Services.close().
        on_shutdown=[services.projections.stop],
        openapi_config=OpenAPIConfig(
            title="DRx prescription service",
            version="0.2.0",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "BearerAuth": SecurityScheme(
                        type="http", scheme="bearer", description="a key from DRX_API_KEYS"
                    )
                }
            ),
        ),
        # Our handler logs faults without their messages, which may quote patient data.
        logging_config=LoggingConfig(log_exceptions="never", configure_root_logger=False),
    )
    # The services (and the application's connection pool) live as long as the web app.
    app.state.services = services
    return app
