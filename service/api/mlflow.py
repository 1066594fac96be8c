"""The MLflow scoring surface for the default model: ``POST /invocations``, ``/ping``, ``/health``, ``/version``.

This is also SageMaker's container contract (``/ping`` + ``/invocations``). The model is
``DEFAULT_MODEL`` (else the only one served); predictions go through the one prediction path
(routing, canary, validation, the prediction log) like v1's. Errors on these routes take
MLflow's shape (``service.protocols.mlflow.error_body``), whatever raised them.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request

from service.api import limits
from service.api.auth import require_scope
from service.api.csrf import accepts
from service.api.io import json_response, read_body, read_json
from service.errors import NotReady, ServiceError, UnsupportedMediaType
from service.models import pii
from service.protocols import mlflow
from service.serving import inference

bp = Blueprint("mlflow", __name__)

JSON, CSV = "application/json", "text/csv"
BODY_TYPES = (JSON, CSV)


@bp.post("/invocations")
@accepts(*BODY_TYPES)
@require_scope("predict")
def invocations() -> Response:
    app = current_app._get_current_object()  # one context lookup
    ext, config = app.extensions, app.config["SERVICE_CONFIG"]
    target = inference.Target(mlflow.default_model(config.default_model, _model_names()))
    limits.charge_request(ext)
    with ext["observer"].watch(target, g.request_id, "mlflow") as watch:
        wanted = _decode(target, ext["limits"].max_rows, request.headers.get(config.routing_key_header))
        limits.charge_rows(wanted, ext)
        answer = watch.answered(inference.predict(ext["catalog"], wanted, ext["limits"], executor=ext["executor"]))
    return json_response(mlflow.encode(answer), headers={"X-Model-Version": str(answer.version)})


@bp.get("/ping")
@bp.get("/health")
def ping() -> Response:
    """200 when the default model has a verified production version to answer with; open, like the probes."""
    if not _default_servable():
        raise NotReady("The default model cannot answer yet (see /readyz with a key, or the server log).")
    # MLflow answers a bare newline labelled JSON; clients read only the status, so this is valid JSON
    return json_response({"status": "ok"})


@bp.get("/version")
@require_scope("read")
def version() -> Response:
    """Name the default model and the production version it serves."""
    config = current_app.config["SERVICE_CONFIG"]
    name = mlflow.default_model(config.default_model, _model_names())
    return json_response({"model": name, "version": current_app.extensions["catalog"].resolve(name).version})


@bp.after_request
def mlflow_error_shape(response: Response) -> Response:
    """Give every error on these routes MLflow's shape, whichever handler wrote it (ours, auth, CSRF)."""
    if response.status_code < 400 or response.mimetype != JSON:
        return response
    try:
        error = orjson.loads(response.get_data())["error"]
        body = mlflow.error_body(response.status_code, error["message"], error["code"], error.get("details", {}))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return response
    response.set_data(orjson.dumps(body))
    return response


def _decode(target: inference.Target, max_rows: int, routing_header: str | None) -> inference.PredictRequest:
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset != "utf-8":
        raise UnsupportedMediaType("Send the body in UTF-8.", details={"charset": charset[:40]})
    features = limits.model_features(target)
    if request.mimetype == CSV:
        return mlflow.decode_csv(read_body(), target, max_rows=max_rows, features=features,
                                 text_columns=_text_columns(target.name), routing_header=routing_header)
    return mlflow.decode_json(read_json(limits.json_budget(target.name)), target, max_rows=max_rows,
                              features=features, routing_header=routing_header)


def _model_names() -> list[str]:
    return [state.name for state in current_app.extensions["catalog"].models()]


def _text_columns(name: str) -> list[str]:
    """Features the production version reads as text, so CSV cells like ``007`` stay strings."""
    try:
        features: list[dict[str, Any]] = current_app.extensions["catalog"].resolve(name).features
    except ServiceError:
        return []  # the prediction itself says what is wrong
    return [f["name"] for f in features if f["type"] == "string" or (f["type"] == "category" and _text_categories(f))]


def _text_categories(feature: dict[str, Any]) -> bool:
    # personal-data categories are stored only as hashes, with a flag saying whether they were text
    hashed = feature.get(pii.HASHED)
    if hashed is not None and feature.get("categories") is None:
        return bool(hashed.get("text"))
    return all(isinstance(c, str) for c in feature.get("categories") or [0])


def _default_servable() -> bool:
    config = current_app.config["SERVICE_CONFIG"]
    try:
        current_app.extensions["catalog"].resolve(mlflow.default_model(config.default_model, _model_names()))
    except ServiceError:
        return False
    return True
