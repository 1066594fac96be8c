"""The native v1 predict surface (KServe V1 / TF Serving style URLs)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, after_this_request, current_app, g, request

from service.api.auth import require_scope
from service.api.io import json_response, read_json
from service.errors import ServiceError
from service.models.rollout import routing_key_from
from service.serving import inference

bp = Blueprint("predict", __name__, url_prefix="/v1/models")


@bp.post("/<model_name:name>:predict")
@bp.post("/<model_name:name>/versions/<version_number:version>:predict")
@bp.post("/<model_name:name>/labels/<label_name:label>:predict")
@require_scope("predict")
def predict(name: str, version: int | None = None, label: str | None = None):
    started = time.perf_counter()
    observer, request_id = current_app.extensions["observer"], g.request_id  # the callbacks run after the context
    target = inference.Target(name, version, label)
    try:
        payload = read_json()
        target = inference.Target(name, version, label, _routing_key(payload))
        answer = inference.predict(current_app.extensions["catalog"], payload, current_app.extensions["limits"],
                                   target, executor=current_app.extensions["executor"])
        response = json_response(answer.body, headers={"X-Model-Version": str(answer.version)})
    except Exception as exc:
        status, code = (exc.status, exc.code) if isinstance(exc, ServiceError) else (500, "internal_error")
        failed_version = _version_of(exc) if isinstance(exc, ServiceError) else None
        seconds = time.perf_counter() - started
        _observe_after_response(lambda: observer.failed(target, request_id, status, code, seconds, failed_version))
        raise
    _observe_after_response(lambda: observer.answered(answer, target, request_id))
    return response


def _routing_key(payload: Any) -> str | None:
    header = request.headers.get(current_app.config["SERVICE_CONFIG"].routing_key_header)
    parameters = payload.get("parameters") if isinstance(payload, dict) else None
    return routing_key_from(header, parameters.get("routing_key") if isinstance(parameters, dict) else None)


def _observe_after_response(work) -> None:
    """Run ``work`` once the response has been sent: it never delays or fails the answer."""

    @after_this_request
    def schedule(response: Response) -> Response:
        response.call_on_close(work)
        return response


def _version_of(error: ServiceError) -> int | None:
    version = error.details.get("version") if isinstance(error.details, dict) else None
    return version if isinstance(version, int) else None
