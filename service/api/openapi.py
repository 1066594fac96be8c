"""OpenAPI 3.1 for every route, generated from the app itself; ``GET /openapi.json`` and the ``/docs`` page.

Nothing here is written per route by hand that the code already says: paths and their
parameters come from the URL map and its converters, request bodies from the marshmallow
schemas the views validate with, the body types from ``@accepts``, the scope from
``@require_scope``, and each route's error responses from the ``ServiceError`` classes it
can raise (``service.api.openapi_routes``). Each model gets its own request schema from its
manifest (features, types, ranges, categories). The spec lists model names and features, so
it needs the read scope, like ``/v1/models``. ``/docs`` is Swagger UI from the assets the
``flask-swagger-ui`` package ships (Swagger UI 5, which reads OpenAPI 3.1), served by the app
under a Content-Security-Policy that lets the page load nothing but this server's files.
"""

from __future__ import annotations

import importlib.resources
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, render_template, send_from_directory, url_for
from werkzeug.routing import Rule

from service.api import openapi_routes as routes
from service.api.auth import require_scope
from service.api.io import json_response
from service.serving.catalog import Catalog

bp = Blueprint("openapi", __name__, template_folder="templates", static_folder="static/docs",
               static_url_path="/docs/static")

TITLE = "scikit-learn model server"
API_VERSION = "1"
OPENAPI_VERSION = "3.1.0"
SWAGGER_UI = importlib.resources.files("flask_swagger_ui") / "dist"
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"})
#: Scripts, styles and the spec from this server only; Swagger UI sets inline styles on some elements.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
DESCRIPTION = ("Predictions (v1, Open Inference Protocol V2, MLflow scoring), model metadata, monitoring and admin. "
               "Errors share one JSON shape, except on /v2 and MLflow's routes, which answer in their protocol's.")
#: Sections of the page, in this order (a blueprint not listed follows them).
TAGS = [("predict", "Native v1 predictions (KServe V1 / TF Serving style); each model also has its own section."),
        ("mlflow", "MLflow's scoring protocol and SageMaker's container contract, for DEFAULT_MODEL."),
        ("v2", "Open Inference Protocol V2 (KServe, Triton, MLServer)."),
        ("models", "What is served: models, versions, labels, schemas."),
        ("monitoring", "Feedback (ground truth) and the monitoring report."),
        ("admin", "Labels, rollout, promotion, rollback, history (admin scope)."),
        ("health", "Liveness and readiness probes, open."), ("metrics", "Prometheus metrics, open."),
        ("dashboard", "The monitoring page, for people."), ("openapi", "This document and its page.")]
#: Where a prediction's answer leads (stateful clients such as schemathesis follow these).
PREDICT_OPERATION = re.compile(r"post_v1_models_name\w*_predict(\..+)?")
LINKS = {
    "model": (("/v1/models/{name}", "get"), {"name": "$response.body#/model"}),
    "version": (("/v1/models/{name}/versions/{version}", "get"),
                {"name": "$response.body#/model", "version": "$response.body#/version"}),
    "explanation": (("/v1/models/{name}/predictions/{prediction_id}/explanation", "get"),
                    {"name": "$response.body#/model", "prediction_id": "$response.body#/ids/0"}),
}


@bp.get("/openapi.json")
@require_scope("read")
def openapi_json() -> Response:
    return json_response(build_spec(current_app))


@bp.get("/docs")
@require_scope("read")
def docs() -> Response:
    body = render_template("docs/index.html", spec_url=url_for("openapi.openapi_json"))
    return Response(body, mimetype="text/html", headers={"Content-Security-Policy": CSP,
                                                         "X-Content-Type-Options": "nosniff",
                                                         "Cache-Control": "no-store"})


@bp.get("/docs/assets/<any(" + ", ".join(f'"{f}"' for f in sorted(SWAGGER_FILES)) + "):name>")
def asset(name: str) -> Response:
    """Swagger UI's own files, as the package ships them (no CDN); they hold no data, so no key."""
    response = send_from_directory(str(SWAGGER_UI), name, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def build_spec(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI document for every route of ``app`` and every model its catalog serves."""
    plugin = MarshmallowPlugin()
    spec = APISpec(TITLE, API_VERSION, OPENAPI_VERSION, plugins=[plugin], info={"description": DESCRIPTION})
    routes.register_fields(plugin)
    for scheme, definition in routes.SECURITY_SCHEMES.items():
        spec.components.security_scheme(scheme, definition)
    for name, description in TAGS:
        spec.tag({"name": name, "description": description})
    limits = app.extensions["limits"]
    routes.register_components(spec, max_rows=limits.max_rows)
    models = _model_features(app.extensions["catalog"])
    for name, features in models.items():
        routes.register_model(spec, name, features, max_rows=limits.max_rows)
    paths: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint.endswith("static") or rule.endpoint == "openapi.asset":
            continue
        view = app.view_functions[rule.endpoint]
        operations = {method.lower(): routes.operation(rule, method, view)
                      for method in sorted((rule.methods or set()) - SKIPPED_METHODS)}
        # one path may have several rules (a PUT and a DELETE): their operations share it
        paths.setdefault(openapi_path(rule), ({}, routes.path_parameters(rule)))[0].update(operations)
        for name in models:
            if concrete := routes.model_operations(rule, name, operations):
                parameters = [p for p in routes.path_parameters(rule) if p["name"] != "name"]
                paths.setdefault(openapi_path(rule, name), ({}, parameters))[0].update(concrete)
    _link(paths)
    for path, (operations, parameters) in paths.items():
        spec.path(path=path, operations=operations, parameters=parameters)
    return spec.to_dict()


def _link(paths: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    """Add ``LINKS`` to every 200 answer of a predict operation, where the target operation exists."""
    found = {}
    for name, ((path, method), parameters) in LINKS.items():
        target = paths.get(path, ({}, []))[0].get(method)
        if target is not None:
            found[name] = {"operationId": target["operationId"], "parameters": parameters}
    for operations, _ in paths.values():
        for op in operations.values():
            if PREDICT_OPERATION.fullmatch(op["operationId"]) and found:
                op["responses"]["200"] = {**op["responses"]["200"], "links": found}


def openapi_path(rule: Rule, model: str | None = None) -> str:
    """Turn a Werkzeug rule into an OpenAPI path: ``<model_name:name>`` becomes ``{name}`` (or the model's name)."""

    def variable(match: re.Match) -> str:
        return model if model is not None and match[2] == "name" else "{" + match[2] + "}"

    return routes.RULE_ARGUMENT.sub(variable, rule.rule)


def _model_features(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """Each model's features, from the version unqualified requests get (production), else its newest loaded."""
    found = {}
    for state in catalog.models():
        for version in (state.labels.get("production"), *sorted(state.versions, reverse=True)):
            model = state.available(version)
            if model is not None:
                found[state.name] = model.features
                break
    return found
