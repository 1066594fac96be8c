"""The Open Inference Protocol V2 REST surface (``/v2``): parse -> call -> dump, errors as the spec says.

Inference goes through the same path as v1 (``service.serving.inference.predict``: labels,
canary, shadow, fallback, validation) inside the same ``observer.watch``; the codec is
``service.protocols.v2``. Failures on these routes answer ``{"error": "<message>"}`` (the spec's
shape; invalid input is 400 as in KServe and Triton); every other route keeps the service's own
error shape. Routing errors (an unknown path under /v2) never reach a blueprint and keep it too.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from service.api import limits
from service.api.auth import require_scope
from service.api.csrf import accepts
from service.api.handlers import HTTP_CODES
from service.api.io import json_response, read_body
from service.errors import (
    ModelUnavailable,
    ServiceError,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
    VersionNotFound,
)
from service.models.registry import PRODUCTION
from service.protocols import check_containers, v2
from service.serving import inference
from service.serving.catalog import ModelState
from service.serving.runtime import LoadedModel

log = logging.getLogger(__name__)

bp = Blueprint("v2", __name__, url_prefix="/v2")

NOT_READY = 400  # the spec: 200 means true, a 4xx false


@bp.url_value_preprocessor
def _binary_body_type(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Name the type of a request sent without one (tritonclient and the KServe client send none).

    Runs before the app's checks. ``Inference-Header-Content-Length`` defines a binary body, and
    no browser sends that header cross-site without a CORS preflight, which this server never
    grants. An untyped body with neither ``Origin`` nor ``Sec-Fetch-Site`` is not from a browser
    (a form always names its type; a cross-site ``fetch`` always sends Origin), so it is read as
    JSON, which is what these clients send. Naming either type opens nothing to other sites.
    """
    if request.headers.get("Content-Type"):
        return
    if v2.HEADER_LENGTH in request.headers:
        request.environ["CONTENT_TYPE"] = v2.BINARY_TYPE
    elif "Origin" not in request.headers and "Sec-Fetch-Site" not in request.headers:
        request.environ["CONTENT_TYPE"] = v2.JSON_TYPE


@bp.get("")
def server_metadata() -> Response:
    return json_response(v2.SERVER)


@bp.get("/health/live")
def live() -> Response:
    return json_response({"live": True})


@bp.get("/health/ready")
def ready() -> Response:
    is_ready, _ = current_app.extensions["catalog"].readiness()
    return json_response({"ready": is_ready}, 200 if is_ready else NOT_READY)


@bp.get("/models/<model_name:name>")
@bp.get("/models/<model_name:name>/versions/<version_number:version>")
@require_scope("read")
def model_metadata(name: str, version: int | None = None) -> Response:
    state = current_app.extensions["catalog"].model(name)
    model = _described(state, version)
    versions = [version] if version is not None else sorted(v for v in state.versions if state.available(v))
    return json_response(v2.model_metadata(name, versions, model))


@bp.get("/models/<model_name:name>/ready")
@bp.get("/models/<model_name:name>/versions/<version_number:version>/ready")
@require_scope("read")
def model_ready(name: str, version: int | None = None) -> Response:
    state = current_app.extensions["catalog"].model(name)
    if version is not None and version not in state.versions:
        raise VersionNotFound(details={"model": name, "version": version})
    is_ready = state.available(version if version is not None else state.labels.get(PRODUCTION)) is not None
    return json_response({"name": name, "ready": is_ready}, 200 if is_ready else NOT_READY)


@bp.post("/models/<model_name:name>/infer")
@bp.post("/models/<model_name:name>/versions/<version_number:version>/infer")
@bp.post("/models/<model_name:name>/labels/<label_name:label>/infer")
@require_scope("predict")
@accepts(v2.JSON_TYPE, v2.BINARY_TYPE)
def infer(name: str, version: int | None = None, label: str | None = None) -> Response:
    app, req = current_app._get_current_object(), request._get_current_object()  # one context lookup each
    ext, config, request_id = app.extensions, app.config["SERVICE_CONFIG"], g.request_id
    target = inference.Target(name, version, label)
    limits.charge_request(ext)
    with ext["observer"].watch(target, request_id, "v2") as watch:
        features = limits.model_features(target, ext)
        body, header_length = _read_body(), req.headers.get(v2.HEADER_LENGTH)
        check_containers(_json_part(body, header_length), limits.json_budget(name, per_feature=True, extensions=ext),
                         ext["limits"].max_rows)
        wanted = v2.decode(body, target, header_length=header_length,
                           max_rows=ext["limits"].max_rows, request_id=request_id,
                           features=features, routing_header=req.headers.get(config.routing_key_header))
        limits.charge_rows(wanted.request, ext)
        answer = watch.answered(inference.predict(ext["catalog"], wanted.request, ext["limits"],
                                                  executor=ext["executor"]))
    body, headers = v2.encode(answer, wanted)
    return Response(body, headers={**headers, "X-Model-Version": str(answer.version)})


def _described(state: ModelState, version: int | None) -> LoadedModel:
    """The version whose schema metadata shows: the one asked for, else production, else the newest loaded."""
    if version is not None:
        if version not in state.versions:
            raise VersionNotFound(details={"model": state.name, "version": version})
        candidates = [version]
    else:
        candidates = [state.labels.get(PRODUCTION), *sorted(state.versions, reverse=True)]
    model = next((m for v in candidates if (m := state.available(v)) is not None), None)
    if model is None:
        raise ModelUnavailable(details={"model": state.name, "version": version})
    return model


def _read_body() -> bytes:
    """Read the whole body (JSON, or JSON plus binary tensors); 413 past the limit, 415 if compressed."""
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise UnsupportedMediaType("Compressed request bodies are not supported; send them uncompressed.")
    return read_body()


def _json_part(body: bytes, header_length: str | None) -> bytes:
    """The JSON part of a body (binary tensors after it may hold any byte); the codec checks the header itself."""
    value = (header_length or "").strip()
    if header_length is None:
        return body
    if value.isascii() and value.isdigit() and int(value) <= len(body):
        return body[:int(value)]
    return b""  # an invalid length: the codec refuses it before parsing anything


# -- errors, as the spec shapes them -------------------------------------------------------------


@bp.errorhandler(Exception)
def _error(error: Exception) -> Response:
    """Answer ``{"error": message}`` with the status the failure has (invalid input: 400)."""
    headers: Any = {}
    if isinstance(error, HTTPException):
        status = error.code or 500
        message = HTTP_CODES.get(status, (None, error.name))[1]
        if status == 405 and getattr(error, "valid_methods", None):
            headers = {"Allow": ", ".join(sorted(error.valid_methods))}
    else:
        failure = error
        if isinstance(error, sqlite3.Error):  # both store backends raise sqlite3.Error
            failure = StoreUnavailable()
        elif not isinstance(error, ServiceError):
            failure = ServiceError()
        status, message, headers = failure.status, failure.message, failure.headers
        if status >= 500:
            log.error("request failed", exc_info=failure.__cause__ or error, extra={"code": failure.code})
        if isinstance(failure, ValidationFailed):
            status = 400
    return json_response({"error": message}, status, headers)
