"""Explanations over HTTP: ``:explain`` (predict with contributions) and a logged prediction's explanation.

``POST /v1/models/<m>:explain`` (and ``/versions/<v>:explain``, ``/labels/<l>:explain``) is
predict with ``"parameters": {"explain": true}`` forced on: same layouts, routing, logging and
scope. ``GET /v1/models/<m>/predictions/<id>/explanation`` explains a logged decision again with
the version that made it (``service.explain.past``): one row, in the worker's one explanation
slot and charged at its cost like ``:explain`` (``service.api.explaining``); each such look is recorded in the audit
trail (who asked, for which prediction), as answering a data subject is an act to account for.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g

from service import explain as explain_core
from service.api import explaining, limits
from service.api.auth import require_scope
from service.api.io import json_response
from service.api.predict import answer
from service.explain import past
from service.serving import inference

bp = Blueprint("explain", __name__, url_prefix="/v1/models")


@bp.post("/<model_name:name>:explain")
@bp.post("/<model_name:name>/versions/<version_number:version>:explain")
@bp.post("/<model_name:name>/labels/<label_name:label>:explain")
@require_scope("predict")
def explain(name: str, version: int | None = None, label: str | None = None) -> Response:
    return answer(inference.Target(name, version, label), explained=True)


@bp.get("/<model_name:name>/predictions/<string(maxlength=128):prediction_id>/explanation")
@require_scope("read")
def logged(name: str, prediction_id: str) -> Response:
    limits.charge_request()
    ext = current_app.extensions
    ext["catalog"].model(name)  # 404 for an unknown model before the database is asked
    found = past.find(ext["store"], name, prediction_id)
    model = ext["catalog"].resolve(name, found.version)
    with explaining.running():
        cost = explain_core.cost_of(model)
        limits.charge_explained(1, cost.factor if cost is not None else 1.0)
        body = past.explain_logged(model, found)
    if "audit" in ext:  # queued: never slows or fails the answer
        actor = f"key:{g.key_id}" if getattr(g, "key_id", None) else "local"
        ext["audit"].put(actor, "prediction.explained", f"model:{name}",
                         {"prediction_id": prediction_id, "version": found.version})
    return json_response(body)
