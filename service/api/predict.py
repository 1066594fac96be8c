"""The native v1 predict surface (KServe V1 / TF Serving style URLs): parse -> call -> dump."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request

from service.api import explaining, limits
from service.api.auth import require_scope
from service.api.io import json_response, read_json
from service.protocols import v1
from service.serving import inference

bp = Blueprint("predict", __name__, url_prefix="/v1/models")


@bp.post("/<model_name:name>:predict")
@bp.post("/<model_name:name>/versions/<version_number:version>:predict")
@bp.post("/<model_name:name>/labels/<label_name:label>:predict")
@require_scope("predict")
def predict(name: str, version: int | None = None, label: str | None = None) -> Response:
    return answer(inference.Target(name, version, label))


def answer(target: inference.Target, *, explained: bool = False) -> Response:
    """Predict (and explain when asked, or when ``explained``) with the version that answers."""
    app, req = current_app._get_current_object(), request._get_current_object()  # one context lookup each
    ext, config = app.extensions, app.config["SERVICE_CONFIG"]
    limits.charge_request(ext)
    with ext["observer"].watch(target, g.request_id) as watch:
        features = limits.model_features(target, ext)
        payload = read_json(limits.json_budget(target.name, extensions=ext))
        wanted = v1.decode(payload, target, max_rows=ext["limits"].max_rows, features=features,
                           routing_header=req.headers.get(config.routing_key_header))
        if explained or v1.explain_asked(payload):
            with explaining.running():
                done = inference.predict(ext["catalog"], wanted, ext["limits"], executor=ext["executor"],
                                         admit=explaining.admission(wanted))
                # explanations use the scikit-learn estimator of the version that answered, whatever its backend
                why = explaining.explained(done)
        else:
            limits.charge_rows(wanted, ext)
            done, why = inference.predict(ext["catalog"], wanted, ext["limits"], executor=ext["executor"]), None
        watch.answered(done)
    return json_response(v1.encode(done, why), headers={"X-Model-Version": str(done.version)})
