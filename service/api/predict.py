"""The native v1 predict surface (KServe V1 / TF Serving style URLs)."""

from __future__ import annotations

from flask import Blueprint, current_app

from service import inference
from service.api.io import json_response, read_json
from service.security import require_scope

bp = Blueprint("predict", __name__, url_prefix="/v1/models")


@bp.post("/<model_name:name>:predict")
@bp.post("/<model_name:name>/versions/<version_number:version>:predict")
@bp.post("/<model_name:name>/labels/<label_name:label>:predict")
@require_scope("predict")
def predict(name: str, version: int | None = None, label: str | None = None):
    payload = read_json()
    answer = inference.predict(current_app.extensions["catalog"], payload, current_app.extensions["limits"],
                               name=name, version=version, label=label)
    return json_response(answer.body, headers={"X-Model-Version": str(answer.version)})
