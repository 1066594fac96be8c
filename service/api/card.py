"""The model card of a version: HTML for people (the monitoring page's style and CSP), Markdown on ``?format=md``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template, request

from service.api.auth import require_scope
from service.api.dashboard import CSP
from service.api.io import validation_failed
from service.monitoring.card import build_card
from service.monitoring.card_text import markdown

bp = Blueprint("card", __name__, url_prefix="/v1/models", template_folder="templates")

FORMATS = ("html", "md")


@bp.get("/<model_name:name>/versions/<version_number:version>/card")
@require_scope("read")
def card(name: str, version: int) -> Response:
    wanted = request.args.get("format", "html")
    if wanted not in FORMATS:
        raise validation_failed({"format": [f"Must be one of: {', '.join(FORMATS)}."]}, "the query")
    config = current_app.config["SERVICE_CONFIG"]
    found = build_card(current_app.extensions["monitoring"], config.artifacts_dir, name, version)
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if wanted == "md":
        return Response(markdown(found), mimetype="text/markdown", headers=headers)
    return Response(render_template("card/card.html", card=found), mimetype="text/html", headers=headers)
