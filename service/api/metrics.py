"""The metrics HTTP shell: request hooks that time and count every request, and ``GET /metrics``.

``GET /metrics`` carries counts and timings, never inputs, but it lists model names, versions
and hashes: once API keys are configured (``API_KEYS_FILE``) it needs a read key (scrapers send
it as a bearer token or ``X-API-Key``), unless ``METRICS_REQUIRE_KEY=0`` opens it on purpose;
without keys (open mode, a developer on loopback) it is as open as the health probes.
Feature names are numbered unless ``METRICS_FEATURE_LABELS=1``.
What is counted, and how workers are added up, is ``service.monitoring.metrics``'s job.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request

from service.api.auth import require_scope
from service.monitoring import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    config = current_app.config.get("SERVICE_CONFIG")
    if config is not None and config.metrics_key_required:
        return _scrape_with_key()
    return _render()


@require_scope("read")
def _scrape_with_key():
    return _render()


def _render() -> Response:
    body, content_type = metrics.render()
    return Response(body, status=200, content_type=content_type)


def init_app(app: Flask) -> None:
    """Time and count every request by URL rule (``<unmatched>`` for 404/405), method and status.

    The start hook goes first in the chain so the time covers the other hooks (request id,
    authentication); the in-progress gauge is released in teardown, which runs whatever happens.
    """
    config = app.config.get("SERVICE_CONFIG")
    metrics.use_feature_names(config.metrics_feature_labels if config is not None else True)
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_release)


def _start() -> None:
    try:
        metrics.current().http_in_progress.inc()
        g._metrics_started = time.perf_counter()
    except Exception:
        metrics.warn_once("request start")


def _finish(response: Response) -> Response:
    try:
        req = request._get_current_object()  # one context lookup, not one per attribute
        rule = req.url_rule
        route = rule.rule if rule is not None else metrics.UNMATCHED_ROUTE
        registry = metrics.current()
        registry.observe_request(route, req.method, response.status_code, g.get("_metrics_started"))
        registry.sample_process()
    except Exception:
        metrics.warn_once("request finish")
    return response


def _release(_error: BaseException | None) -> None:
    try:
        if g.pop("_metrics_started", None) is not None:
            metrics.current().http_in_progress.dec()
    except Exception:
        metrics.warn_once("request teardown")
