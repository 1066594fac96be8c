"""Vertex AI's custom-container contract: the health and predict routes the platform names.

Vertex AI starts the container with ``AIP_HTTP_PORT`` (the config binds it when PORT is unset),
``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE``, probes the first with GET and sends
``{"instances": [...], "parameters": {...}}`` to the second, expecting ``{"predictions": [...]}``
(https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements). That is v1's
envelope and answer, so the predict route is v1's for ``DEFAULT_MODEL`` (else the only model),
through the one prediction path; health answers like ``/ping``. Routes exist only when set.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from service.api import mlflow as mlflow_api
from service.api import predict as predict_api
from service.api.auth import require_scope
from service.config import Config
from service.protocols import mlflow
from service.serving import inference


def blueprint(config: Config) -> Blueprint:
    """The routes ``config`` names (none when the platform set none)."""
    bp = Blueprint("vertex", __name__)
    if config.aip_health_route:
        bp.add_url_rule(config.aip_health_route, "health", health, methods=["GET"])
    if config.aip_predict_route:
        bp.add_url_rule(config.aip_predict_route, "predict", predict, methods=["POST"])
    return bp


def health() -> Response:
    """200 when the default model has a verified production version to answer with."""
    return mlflow_api.ping()


@require_scope("predict")
def predict() -> Response:
    """Predict with the default model: v1's body and answer."""
    config = current_app.config["SERVICE_CONFIG"]
    names = [state.name for state in current_app.extensions["catalog"].models()]
    return predict_api.answer(inference.Target(mlflow.default_model(config.default_model, names)))
