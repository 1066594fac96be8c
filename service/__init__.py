"""A production prediction server for scikit-learn models.

``create_app`` only wires: config -> logging -> security -> catalog -> store and observers ->
blueprints -> error handlers. Nothing happens at import.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from service.config import Config

BUDGET_THREADS = 4  # predictions running against a time budget at once, per worker


def create_app(config: Config | None = None) -> Flask:
    """Build the Flask app for ``config`` (read from the environment when not given)."""
    from service import logs, security
    from service.api import admin, health, models, predict
    from service.api.converters import CONVERTERS
    from service.api.handlers import register_error_handlers
    from service.catalog import Catalog
    from service.guard import Guard
    from service.inference import Limits
    from service.observe import Observer
    from service.store import Store

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
    store = Store.from_url(config.database_url)
    app.extensions.update(
        catalog=catalog,
        limits=Limits(config.max_batch_rows, config.vectorized_min_rows),
        store=store,
        observer=Observer(store),
        executor=ThreadPoolExecutor(BUDGET_THREADS, thread_name_prefix="budget"),
    )
    if config.guard_seconds:
        guard = Guard(store, config.artifacts_dir, config.guard_seconds)
        guard.start()
        app.extensions["guard"] = guard

    for blueprint in (health.bp, models.bp, predict.bp, admin.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    logging.getLogger(__name__).info(
        "app ready", extra={"artifacts_dir": str(config.artifacts_dir), "models": [m.name for m in catalog.models()]}
    )
    return app
