"""The API's description: the OpenAPI document at `/schema/openapi.json`, its version the
package's, and the browsable page at `/schema`, whose Swagger UI assets ship in the package
(`static/swagger-ui/`) and are served from `/static/swagger-ui/`: the page works with no
internet access."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

ASSETS = Path(__file__).with_name("static") / "swagger-ui"
ASSETS_PATH = "/static/swagger-ui"


def package_version() -> str:
    try:
        return version("drx-service")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def assets_router() -> Router:
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[ASSETS],
        cache_control=CacheControlHeader(max_age=86400),
        name="swagger-ui-assets",
    )


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="DRx prescription service",
        version=package_version(),
        description=(
            "Receives H2H Digital Rx (DRx) prescription webhooks into an event-sourced store, "
            "and serves what they say to internal apps. Every path but the webhook (signed), "
            "/health, /ready, /metrics and /schema wants Authorization: Bearer <key>."
        ),
        path="/schema",
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' href='{ASSETS_PATH}/favicon-32x32.png'>",
            )
        ],
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(
                    type="http", scheme="bearer", description="a key from DRX_API_KEYS"
                )
            }
        ),
    )
