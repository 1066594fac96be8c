"""The app factory: ``create_app`` only wires config -> logging -> auth -> catalog -> store,
observers and monitoring -> blueprints -> error handlers. Nothing happens at import.
"""


from __future__ import annotations

import importlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from service.config import Config

BUDGET_THREADS = 4  # predictions running against a time budget at once, per worker
STORE_TIMEOUT = 1.0  # seconds a write after a response may wait for the database lock


#: The modules ``create_app`` and the requests it serves import. ``preload_modules`` imports them in
#: the Gunicorn master before it forks (``on_starting``), so every worker shares them instead of
#: importing its own copy after the fork (about 30 MiB of private memory per worker).
APP_MODULES = (
    "service.explain", "service.logs", "service.api.admin", "service.api.application", "service.api.auth",
    "service.api.card", "service.api.converters", "service.api.csrf", "service.api.dashboard", "service.api.explain",
    "service.api.explaining", "service.api.handlers", "service.api.health", "service.api.io", "service.api.limits",
    "service.api.metrics", "service.api.mlflow", "service.api.models", "service.api.monitoring", "service.api.openapi",
    "service.api.predict", "service.api.proxy", "service.api.request_ids", "service.api.subjects", "service.api.v2",
    "service.api.vertex",
    "service.models.auto_rollback", "service.models.registry_anchor", "service.monitoring.alerts",
    "service.monitoring.metrics", "service.monitoring.multiproc", "service.monitoring.notify",
    "service.monitoring.observe", "service.monitoring.outbox", "service.monitoring.predlog",
    "service.monitoring.report", "service.monitoring.retention_loop", "service.monitoring.spool",
    "service.retrain.trigger", "service.security.audit", "service.security.checkpoint_loop", "service.security.signing",
    "service.serving.catalog", "service.serving.inference", "service.serving.runtime", "service.store",
    "service.store.migration", "prometheus_client.multiprocess", "prometheus_client.process_collector",
)


def preload_modules() -> None:
    """Import the modules the app is made of (and only import them: nothing is built or loaded)."""
    for name in APP_MODULES:
        importlib.import_module(name)


def create_app(config: Config | None = None) -> Flask:
    """Build the Flask app for ``config`` (read from the environment when not given)."""
    from service import explain, logs
    from service.api import (
        admin,
        auth,
        csrf,
        dashboard,
        health,
        limits,
        models,
        monitoring,
        openapi,
        predict,
        proxy,
        request_ids,
        vertex,
    )
    from service.api import card as card_api
    from service.api import explain as explain_api
    from service.api import explaining as explaining_api
    from service.api import metrics as metrics_api
    from service.api import mlflow as mlflow_api
    from service.api import subjects as subjects_api
    from service.api import v2 as v2_api
    from service.api.application import ServiceFlask
    from service.api.converters import URL_CONVERTERS
    from service.api.handlers import register_error_handlers
    from service.models.auto_rollback import Guard
    from service.models.registry_anchor import RegistryAnchors
    from service.monitoring import metrics
    from service.monitoring.multiproc import multiprocess_dir
    from service.monitoring.observe import Observer
    from service.monitoring.predlog import PredictionLog
    from service.monitoring.report import Monitoring
    from service.security import audit
    from service.security.signing import model_keys
    from service.serving.catalog import Catalog
    from service.serving.inference import Limits
    from service.serving.runtime import BackendChoice
    from service.store import Store

    config = config or Config.from_env()
    logs.configure_logging(config.log_level)
    app = ServiceFlask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=config.max_request_bytes, SERVICE_CONFIG=config)
    app.url_map.converters.update(URL_CONVERTERS)
    app.url_map.strict_slashes = False
    metrics_api.init_app(app)
    request_ids.init_app(app)
    proxy.init_app(app, config)
    csrf.init_app(app, config)
    auth.init_app(app, config)
    limits.init_app(app, config)
    explaining_api.init_app(app, config)

    audit_log = audit.Background()  # refused artifacts, denied requests: written off the request path
    store = Store.from_url(config.database_url, timeout=STORE_TIMEOUT)  # opens on first use
    catalog = Catalog(config.artifacts_dir, model_keys(config.signing_key, config.trusted_keys), config.poll_seconds,
                      on_loaded=metrics.observe_model_loaded,
                      on_load_failed=audit_log.refused(metrics.observe_load_failure),
                      on_removed=metrics.observe_model_removed,
                      backend=BackendChoice.parse(config.model_backend, config.model_backends),
                      verifier=RegistryAnchors(store),  # registry.json must match the audit trail
                      prepare=explain.preparer(multiprocess_dir()))  # explanation cost, shared by the workers
    catalog.refresh()
    if config.poll_seconds:
        catalog.start_polling()
    audit_log.attach(store)
    app.extensions["audit"] = audit_log
    prediction_log = PredictionLog(store, sample_rate=config.prediction_log_sample, pii_key=config.pii_hash_key)
    report = Monitoring(catalog, prediction_log, config.monitoring_window, cache_seconds=config.monitoring_cache_seconds,
                        large_reports=config.monitoring_large_reports or max(1, config.workers - 1))
    app.extensions.update(
        catalog=catalog,
        limits=Limits(config.max_batch_rows, config.vectorized_min_rows),
        store=store,
        observer=Observer(store, prediction_log, record_requests=config.record_requests,
                          check_quality=config.data_quality_checks, capacity=config.record_queue_size,
                          capacity_rows=config.record_queue_rows, outbox=_outbox(config, store, prediction_log)),
        monitoring=report,
        prediction_log=prediction_log,
        executor=ThreadPoolExecutor(BUDGET_THREADS, thread_name_prefix="budget"),
    )
    report.alerts = _start_alerts(app, config, store, report)
    _start_retention(app, config, store)
    _start_checkpoints(app, config, store)
    if config.guard_seconds:
        guard = Guard(store, config.artifacts_dir, config.guard_seconds, monitor=report.version_section)
        guard.start()
        app.extensions["guard"] = guard

    for blueprint in (health.bp, models.bp, predict.bp, admin.bp, monitoring.bp, dashboard.bp, metrics_api.bp,
                      mlflow_api.bp, v2_api.bp, vertex.blueprint(config),
                      openapi.bp, explain_api.bp, card_api.bp, subjects_api.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    logging.getLogger(__name__).info(
        "app ready", extra={"artifacts_dir": str(config.artifacts_dir), "models": [m.name for m in catalog.models()]}
    )
    return app


def close_app(app: Flask, timeout: float = 10.0) -> bool:
    """Stop what ``create_app`` started and close the database connections it opened (a Gunicorn
    worker's graceful exit, a test's teardown), within about ``timeout`` seconds.

    The records come first: the recorder's queue is spooled and shipped as far as the store takes
    it. Then the loops stop (none reopens the store after it is closed) and the store is closed.
    True when every record reached the store; what did not waits in the spool on disk.
    """
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.5, deadline - time.monotonic())  # a stuck thread costs at most this much more

    app.extensions["catalog"].stop_polling()
    shipped = app.extensions["observer"].close(timeout=timeout)
    for name in ("alert_loop", "guard", "retention", "checkpoints"):
        if name in app.extensions:
            app.extensions[name].stop(timeout=left())
    app.extensions["audit"].join(timeout=left())
    app.extensions["monitoring"].alerts.notifier.close(timeout=left())
    # a prediction stuck in the budget pool must not hold the exit past ``timeout``: queued ones are cancelled
    app.extensions["executor"].shutdown(wait=False, cancel_futures=True)
    app.extensions["store"].close(wait=left())
    return shipped


def _outbox(config: Config, store, prediction_log):
    """Records go through an on-disk spool per worker; every failed write and lost record is counted."""
    from service.monitoring import metrics
    from service.monitoring.outbox import Outbox
    from service.monitoring.spool import Spool

    store.on_write_failure = metrics.observe_store_write_failure
    if store.blobs is not None:  # a record whose blob bytes are lost counts as unreadable, once per worker
        store.blobs.on_damaged = lambda: metrics.observe_record_dropped("unreadable")
    spool = Spool(config.spool_folder(), max_bytes=int(config.spool_max_mb * 2**20),
                  fsync_seconds=config.spool_fsync_seconds)
    return Outbox(store, prediction_log, spool, on_drop=metrics.observe_record_dropped)


def _start_alerts(app: Flask, config: Config, store, report):
    """Evaluate alert rules in the background: one worker at a time, the state in the database."""
    from service.monitoring import metrics
    from service.monitoring.alerts import AlertLoop, AlertManager, load_rules
    from service.monitoring.notify import Notifier
    from service.retrain.trigger import launcher

    manager = AlertManager(
        store, load_rules(config.alert_rules_file), Notifier(config.alert_webhook_url),
        on_state=lambda model, version, rule, value: metrics.set_gauge(
            "alert_state", value, model=model, version=version, rule=rule),
        on_action=launcher(config.artifacts_dir, config.database_url),
    )
    if config.alert_seconds:
        loop = AlertLoop(manager, report.reports, interval=config.alert_seconds)
        loop.start()
        app.extensions["alert_loop"] = loop
    return manager


def _start_checkpoints(app: Flask, config: Config, store) -> None:
    """Anchor the audit chain outside the database when a checkpoint key is configured."""
    if config.audit_checkpoint_key_file is None:
        return
    from service.monitoring import metrics
    from service.security.checkpoint_loop import CheckpointLoop

    loop = CheckpointLoop(store, config.audit_checkpoint_key_file, config.audit_checkpoint_file,
                          config.audit_checkpoint_seconds, on_checkpoint=metrics.observe_checkpoint)
    loop.start()
    app.extensions["checkpoints"] = loop


def _start_retention(app: Flask, config: Config, store) -> None:
    """Keep the prediction log within RETENTION_DAYS and PREDICTION_LOG_MAX_ROWS: one worker at a time."""
    from service.monitoring import metrics
    from service.monitoring.retention_loop import RetentionLoop

    loop = RetentionLoop(store, older_than_seconds=config.retention_days * 86400, every_seconds=config.retention_seconds,
                         max_rows=config.prediction_log_max_rows,
                         on_deleted=lambda reason, rows: metrics.current().log_rows_deleted.labels(reason).inc(rows),
                         on_marks=lambda marks: metrics.observe_maintenance(marks, config.backups_expected))
    if loop.enabled:
        loop.start()
        app.extensions["retention"] = loop
