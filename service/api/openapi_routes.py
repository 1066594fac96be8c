"""What the OpenAPI document says about each route, derived from the code wherever it can be.

``operation`` reads a view and its rule: the scope from ``@require_scope`` (the mark it
leaves), body types from ``@accepts``, path parameters from the URL converters, and the
error responses from ``ServiceError`` classes: those every route can raise, those a kind of
route raises (a scope, a body, a model in the path), and the few a view raises deeper down
(``RAISES`` in ``service.api.openapi_endpoints``). Statuses and codes are the classes' own attributes, so the document cannot
drift from what the handlers send. Request bodies are the marshmallow schemas the views
load; ``register_model`` turns a manifest's features into JSON Schema.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import INCLUDE, Schema, fields
from werkzeug.routing import Rule

from service import errors
from service.api import admin, monitoring, subjects
from service.api.openapi_endpoints import (
    ALWAYS,
    ANSWERS,
    BODIES,
    BY_PARAMETER,
    OPTIONAL_BODIES,
    OTHER_ANSWERS,
    QUERIES,
    RAISES,
    SCOPED,
    WRITES,
)
from service.models import pii
from service.protocols import mlflow, v1, v2
from service.serving.schemas import StrictBoolean

ERROR = {"$ref": "#/components/schemas/Error"}
#: Blueprints that answer errors in their protocol's shape (and the statuses they answer instead of ours).
#: A path the router cannot match never reaches a blueprint, so 404 may come in our shape there too.
PROTOCOL_ERRORS: dict[str, tuple[dict[str, Any], dict[int, int]]] = {
    "mlflow.": ({"$ref": "#/components/schemas/MlflowError"}, {}),
    "v2.": ({"$ref": "#/components/schemas/V2Error"}, {errors.ValidationFailed.status: errors.BadRequest.status}),
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "basic": {"type": "http", "scheme": "basic", "description": "Any user name, the API key as password (browsers)."},
}
SECURITY = [{"bearer": []}, {"apiKey": []}, {"basic": []}]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONVERTER_SCHEMAS = {
    "model_name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$"},
    "version_number": {"type": "integer", "minimum": 1, "maximum": 999_999_999},
    "label_name": {"type": "string", "pattern": r"^[a-z0-9_-]{1,64}$"},
}
RULE_ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
JSON_KINDS = {"float": "number", "int": "integer", "bool": "boolean", "string": "string"}


def operation(rule: Rule, method: str, view: Callable[..., Any]) -> dict[str, Any]:
    """Document one method of one route from its view, its rule and the errors its kind raises."""
    endpoint = rule.endpoint
    scopes = _scopes(view)
    raised = [*ALWAYS, *(SCOPED if scopes else ()), *(WRITES if method in WRITE_METHODS else ()),
              *(e for argument in sorted(rule.arguments) for e in BY_PARAMETER.get(argument, ())),
              *RAISES.get(endpoint, ())]
    doc = (inspect.getdoc(view) or endpoint.split(".")[-1].replace("_", " ").capitalize()).split("\n")[0]
    responses = {**_success(endpoint), **_errors(raised, endpoint), **OTHER_ANSWERS.get(endpoint, {})}
    slug = re.sub(r"[^A-Za-z0-9]+", "_", RULE_ARGUMENT.sub(r"\2", rule.rule)).strip("_")
    op: dict[str, Any] = {"operationId": f"{method.lower()}_{slug}",
                          "summary": doc, "tags": [endpoint.split(".")[0]], "responses": responses}
    if scopes:
        op["security"] = SECURITY
        op["description"] = f"Needs an API key with the {' or '.join(scopes)} scope (none from loopback in open mode)."
    if endpoint in BODIES and method in WRITE_METHODS:
        types = getattr(view, "accepted_body_types", ("application/json",))
        ref = {"$ref": f"#/components/schemas/{BODIES[endpoint]}"}
        op["requestBody"] = {"required": endpoint not in OPTIONAL_BODIES,
                             "content": {t: {"schema": ref if t == "application/json" else {"type": "string"}}
                                         for t in types}}
    if endpoint in QUERIES:
        op["parameters"] = QUERIES[endpoint]
    return op


def path_parameters(rule: Rule) -> list[dict[str, Any]]:
    """The rule's variables as OpenAPI path parameters, typed by their URL converters."""
    return [{"name": variable, "in": "path", "required": True, "schema": CONVERTER_SCHEMAS.get(converter, {"type": "string"})}
            for converter, variable in RULE_ARGUMENT.findall(rule.rule)]


def model_operations(rule: Rule, model: str, operations: dict[str, Any]) -> dict[str, Any]:
    """The predict operations again for one model, with that model's own request schema."""
    if rule.endpoint != "predict.predict":
        return {}
    ref = {"$ref": f"#/components/schemas/{component_name(model)}Request"}
    return {method: {**op, "operationId": f"{op['operationId']}.{model}", "tags": [f"model {model}"],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
            for method, op in operations.items()}


def _scopes(view: Callable[..., Any]) -> tuple[str, ...]:
    """The scopes ``@require_scope`` was given (it marks its wrapper with them); () for an open view."""
    return tuple(getattr(view, "required_scopes", ()))


def _success(endpoint: str) -> dict[str, Any]:
    mimetype, schema = ANSWERS.get(endpoint, ("application/json", ""))
    body = {"$ref": f"#/components/schemas/{schema}"} if schema else {"type": "object" if "json" in mimetype else "string"}
    headers = {"X-Model-Version": {"schema": {"type": "string"}, "description": "The version that answered."}} \
        if endpoint in ("predict.predict", "mlflow.invocations") else {}
    return {"200": {"description": "OK", "content": {mimetype: {"schema": body}}, **({"headers": headers} if headers else {})}}


def _errors(raised: list[type[errors.ServiceError]], endpoint: str) -> dict[str, Any]:
    """One response per status, its description listing the error codes that share it."""
    schema, statuses = next((shape for prefix, shape in PROTOCOL_ERRORS.items() if endpoint.startswith(prefix)),
                            (ERROR, {}))
    by_status: dict[int, list[str]] = {}
    for error in raised:
        codes = by_status.setdefault(statuses.get(error.status, error.status), [])
        if error.code not in codes:
            codes.append(error.code)
    out = {}
    for status in sorted(by_status):
        shape = {"anyOf": [schema, ERROR]} if status == errors.NotFound.status and schema is not ERROR else schema
        response: dict[str, Any] = {"description": ", ".join(by_status[status]),
                                    "content": {"application/json": {"schema": shape}}}
        if status == errors.Unauthorized.status:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[str(status)] = response
    return out


# -- components -----------------------------------------------------------------------------------


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"description": "Stable machine-readable code."})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "Field-level errors and context."})


class ErrorBody(Schema):
    """The one error shape: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorDetail, required=True)


class MlflowErrorBody(Schema):
    """MLflow's error shape on its routes, with our code and details alongside."""

    error_code = fields.String(required=True, validate=lambda v: v in set(mlflow.ERROR_CODES.values()) | {"INTERNAL_ERROR"})
    message = fields.String(required=True)
    code = fields.String()
    details = fields.Raw()


class V2ErrorBody(Schema):
    """The Open Inference Protocol's error shape on ``/v2``."""

    error = fields.String(required=True)


class Fallback(Schema):
    from_version = fields.Integer()
    reason = fields.String()


class ExplanationSummary(Schema):
    """What an explanation's numbers mean; a logged prediction's also says whether every value was stored."""

    class Meta:
        unknown = INCLUDE

    method = fields.String(required=True, metadata={"description": "linear, tree_shap or sampled_permutation."})
    output = fields.String(required=True, metadata={"description": "What base + contributions add up to."})
    exact, note = fields.Boolean(required=True), fields.String()
    complete = fields.Boolean(metadata={"description": "Logged predictions: every feature's value was stored."})
    withheld = fields.Dict(keys=fields.String(), values=fields.String(),
                           metadata={"description": "Logged predictions: features not stored in the clear, and why "
                                                    "(their contributions are null)."})


class RowExplanation(Schema):
    base = fields.Raw(required=True, metadata={"description": "A number, or one per class in class order."})
    contributions = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), required=True,
                                metadata={"description": "Per feature: a number, or one per class."})


class ExplainedAnswer(Schema):
    """The explanation fields ``:explain`` (and predict with ``parameters.explain``) and a logged prediction share."""

    explanation = fields.Nested(ExplanationSummary)
    explanations = fields.List(fields.Nested(RowExplanation), metadata={"description": "One per row, in ids order."})


class PredictResponse(ExplainedAnswer):
    class Meta:
        unknown = INCLUDE  # answers may gain fields: documented as open

    predictions = fields.List(fields.Raw(), required=True, metadata={"description": "In the model's own classes."})
    model = fields.String(required=True)
    version = fields.Integer(required=True)
    ids = fields.List(fields.String(), required=True, metadata={"description": "Prediction ids, for feedback."})
    classes = fields.List(fields.Raw())
    probabilities = fields.List(fields.List(fields.Float(allow_none=True)),
                                metadata={"description": "Columns in `classes` order; never NaN or "
                                                         "infinity (input_out_of_domain or model_output_invalid instead)."})
    fallback = fields.Nested(Fallback)


class LoggedExplanation(ExplainedAnswer):
    """A logged prediction explained again by the version that made it, in ``:explain``'s shape."""

    class Meta:
        unknown = INCLUDE

    model, version, id = fields.String(required=True), fields.Integer(required=True), fields.String(required=True)
    ts = fields.String(required=True, metadata={"description": "When it was predicted (ISO 8601, UTC)."})
    prediction = fields.Raw(allow_none=True)


class InvocationResponse(Schema):
    class Meta:
        unknown = INCLUDE

    predictions = fields.List(fields.Raw(), required=True)
    ids = fields.List(fields.String(), required=True)
    classes = fields.List(fields.Raw())
    probabilities = fields.List(fields.List(fields.Float(allow_none=True)))


class FeedbackResult(Schema):
    class Meta:
        unknown = INCLUDE

    accepted = fields.Integer(required=True)
    unknown = fields.List(fields.String(), required=True)
    duplicate = fields.List(fields.String(), required=True)


def register_components(spec: APISpec, *, max_rows: int) -> None:
    """Add the shared schemas: bodies the views validate with, answers, and both error shapes."""
    for name, schema in [("Error", ErrorBody), ("MlflowError", MlflowErrorBody), ("PredictResponse", PredictResponse),
                         ("LoggedExplanation", LoggedExplanation),
                         ("InvocationResponse", InvocationResponse), ("FeedbackResult", FeedbackResult),
                         ("PredictRequest", v1.EnvelopeSchema(max_rows=max_rows)),
                         ("InvocationRequest", mlflow.InvocationBody(max_rows=max_rows)),
                         ("LabelChange", admin.LabelBody), ("RolloutChange", admin.RolloutBody),
                         ("Reason", admin.ReasonBody), ("Feedback", monitoring.FeedbackBody),
                         ("V2Error", V2ErrorBody), ("InferenceRequest", v2.InferenceRequestSchema),
                         ("SubjectErasure", subjects.EraseBody), ("ErasureResult", subjects.ErasureResult)]:
        spec.components.schema(name, schema=schema)


def register_fields(plugin: MarshmallowPlugin) -> None:
    """Teach apispec our own fields: what JSON each accepts."""
    plugin.converter.add_attribute_function(_custom_field)


def _custom_field(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    row = {"type": ["object", "array"]}
    if isinstance(field, mlflow.Records):
        return {"type": "array", "minItems": 1, "items": {"type": "object"}}
    if isinstance(field, mlflow.Rows):
        return {"type": "array", "minItems": 1, "items": {"type": "array"}}
    if isinstance(field, v1.Instances):
        return {"type": "array", "minItems": 1, "items": row}
    if isinstance(field, v1.Inputs):
        return {"type": "object", "minProperties": 1, "additionalProperties": {"type": "array"}}
    if isinstance(field, mlflow.InstancesOrInputs):
        return {"type": ["object", "array"], "minItems": 1, "minProperties": 1}
    if isinstance(field, StrictBoolean):
        return {"type": "boolean"}
    return {}


def component_name(model: str) -> str:
    return "Model_" + re.sub(r"[^A-Za-z0-9]", "_", model)


def register_model(spec: APISpec, model: str, features: list[dict[str, Any]], *, max_rows: int) -> None:
    """Add ``Model_<name>Record`` and ``Model_<name>Request``: the model's features as JSON Schema."""
    base = component_name(model)
    properties = {f["name"]: feature_schema(f) for f in features}
    required = [f["name"] for f in features if f.get("required", True)]
    spec.components.schema(f"{base}Record", {"type": "object", "properties": properties, "required": required,
                                             "additionalProperties": False,
                                             "description": f"One row for {model}, by feature name."})
    columns = {name: {"type": "array", "minItems": 1, "maxItems": max_rows, "items": schema}
               for name, schema in properties.items()}
    parameters = {"$ref": "#/components/schemas/PredictRequest/properties/parameters"}
    spec.components.schema(f"{base}Request", {"oneOf": [
        {"type": "object", "required": ["instances"], "additionalProperties": False,
         "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": max_rows,
                                      "items": {"$ref": f"#/components/schemas/{base}Record"}},
                        "parameters": parameters}},
        {"type": "object", "required": ["inputs"], "additionalProperties": False,
         "properties": {"inputs": {"type": "object", "properties": columns, "required": required,
                                   "additionalProperties": False}, "parameters": parameters}},
    ], "description": f"A predict request for {model}: rows by feature name (instances) or columns (inputs)."})


def feature_schema(feature: dict[str, Any]) -> dict[str, Any]:
    """One manifest feature as JSON Schema: type, range, categories, and null when it is nullable.

    A personal-data feature is described by its type only: its categories and range stay unlisted.
    """
    feature = pii.public_feature(feature)
    kind = feature["type"]
    schema: dict[str, Any] = {"description": f"{kind} feature"}
    categories = feature.get("categories")
    if kind in ("category", "string") and categories:
        schema["enum"] = list(categories) + ([None] if feature.get("nullable") else [])
        return schema
    json_type = JSON_KINDS.get(kind, ["string", "integer"])
    types = [json_type] if isinstance(json_type, str) else list(json_type)
    schema["type"] = [*types, "null"] if feature.get("nullable") else (types[0] if len(types) == 1 else types)
    if kind in ("float", "int"):
        if feature.get("min") is not None:
            schema["minimum"] = feature["min"]
        if feature.get("max") is not None:
            schema["maximum"] = feature["max"]
    return schema
