"""A production prediction server for scikit-learn models.

``create_app`` only wires: config -> logging -> security -> catalog -> blueprints -> error
handlers. Nothing happens at import.
"""

from __future__ import annotations

import logging

from flask import Flask

from service.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the Flask app for ``config`` (read from the environment when not given)."""
    from service import logs, security
    from service.api import health, models, predict
    from service.api.converters import CONVERTERS
    from service.api.handlers import register_error_handlers
    from service.catalog import Catalog
    from service.inference import Limits

    config = config or Config.from_env()
    logs.configure_logging(config.log_level)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=config.max_request_bytes, SERVICE_CONFIG=config)
    app.url_map.converters.update(CONVERTERS)
    app.url_map.strict_slashes = False
    logs.init_app(app)
    security.init_app(app, config)

    catalog = Catalog(config.artifacts_dir, config.signing_key, config.poll_seconds)
    catalog.refresh()
    if config.poll_seconds:
        catalog.start_polling()
    app.extensions["catalog"] = catalog
    app.extensions["limits"] = Limits(config.max_batch_rows, config.vectorized_min_rows)

    for blueprint in (health.bp, models.bp, predict.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    logging.getLogger(__name__).info(
        "app ready", extra={"artifacts_dir": str(config.artifacts_dir), "models": [m.name for m in catalog.models()]}
    )
    return app
