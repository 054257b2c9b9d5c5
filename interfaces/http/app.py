"""`create_app(settings)`: the one place the HTTP application is wired."""

from __future__ import annotations

import logging

from litestar import Litestar
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from domain.service import Prescriptions
from infrastructure.eventstore import open_prescriptions
from infrastructure.settings import Settings
from interfaces.drx.signature import SignatureVerifier
from interfaces.http.deliveries import DeliveryController
from interfaces.http.errors import handle_exception
from interfaces.http.health import HealthController
from interfaces.http.prescriptions import PrescriptionController
from interfaces.http.services import Services
from interfaces.http.webhooks import WebhookController

log = logging.getLogger(__name__)


def create_app(settings: Settings, prescriptions: Prescriptions | None = None) -> Litestar:
    """The service's HTTP application over an already migrated store."""
    services = Services(
        settings=settings,
        prescriptions=prescriptions or open_prescriptions(settings),
        verifier=SignatureVerifier(settings.webhook_secrets),
    )
    app = Litestar(
        route_handlers=[
            WebhookController,
            PrescriptionController,
            DeliveryController,
            HealthController,
        ],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        exception_handlers={Exception: handle_exception},
        openapi_config=OpenAPIConfig(
            title="DRx prescription service",
            version="0.1.0",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        # Our handler logs faults without their messages, which may quote patient data.
        logging_config=LoggingConfig(log_exceptions="never", configure_root_logger=False),
    )
    # The application (and its connection pool) lives as long as the web app.
    app.state.services = services
    return app
