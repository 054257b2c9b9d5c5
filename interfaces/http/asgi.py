"""The application factory each web worker process imports (`drx serve --workers N`)."""

from __future__ import annotations

from litestar import Litestar

from infrastructure.dev_credentials import with_credentials
from infrastructure.settings import Settings
from interfaces.bootstrap import load_every_part
from interfaces.http.app import create_app
from interfaces.logs import configure_logging
from interfaces.runtime import tune_for_serving


def app() -> Litestar:
    """Settings from the environment, as the parent `drx serve` saw them; the development
    credentials (SQLite only) come from the file the parent wrote before starting the workers."""
    configure_logging()
    settings, _ = with_credentials(Settings.from_env())
    app = create_app(settings, run_projections=False)  # `drx serve` runs them apart
    load_every_part()  # before the freeze
    tune_for_serving()
    return app
