"""The monitoring page: server-rendered HTML over the monitoring reports, for people to look at.

The data comes from ``app.extensions["monitoring"]`` (``overview(window=...)`` and
``model_report(name, window=...)``); ``service.monitoring.page`` shapes it and the templates in
``service/api/templates/monitoring`` draw it. The page makes no request beyond itself (the
Content-Security-Policy below enforces that) and needs no JavaScript.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

from service.api import limits
from service.api.auth import require_scope
from service.api.io import int_arg
from service.monitoring import page, report

bp = Blueprint("dashboard", __name__, url_prefix="/monitoring", template_folder="templates")

#: Largest ``?window=`` accepted: the report reads that many predictions per version.
MIN_WINDOW = 10
MAX_WINDOW = report.MAX_WINDOW
#: Inline styles and SVG only; nothing is fetched from anywhere, not even from us.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


@bp.get("")
@require_scope("read")
def overview():
    limits.charge_request()
    window = _window()
    monitoring = current_app.extensions.get("monitoring")
    cards = page.overview_view(monitoring.overview(window=window)) if monitoring is not None else []
    return _html("monitoring/overview.html", cards=cards, enabled=monitoring is not None, window=window)


@bp.get("/<model_name:name>")
@require_scope("read")
def model(name: str):
    limits.charge_request()
    window = _window()
    monitoring = current_app.extensions.get("monitoring")
    report = monitoring.model_report(name, window=window) if monitoring is not None else {"model": name}
    return _html("monitoring/model.html", model=page.model_view(report), enabled=monitoring is not None, window=window)


def _window() -> int | None:
    """Read ``?window=N`` (predictions per version); ``None`` when absent."""
    return int_arg("window", low=MIN_WINDOW, high=MAX_WINDOW)


def _html(template: str, **context) -> Response:
    body = render_template(template, max_window=MAX_WINDOW, **context)
    return Response(body, mimetype="text/html", headers={"Content-Security-Policy": CSP,
                                                         "X-Content-Type-Options": "nosniff",
                                                         "Cache-Control": "no-store"})
