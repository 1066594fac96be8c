"""Ground truth in, monitoring figures out: feedback and the per-model monitoring report."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from flask import Blueprint, current_app
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.api import limits
from service.api.auth import require_scope
from service.api.io import int_arg, json_response, read_json, validation_failed
from service.errors import ModelUnavailable, StoreUnavailable
from service.monitoring import report
from service.protocols import container_budget
from service.serving.catalog import ModelState

bp = Blueprint("monitoring", __name__, url_prefix="/v1/models")

MAX_FEEDBACK = 10_000
MAX_WINDOW = report.MAX_WINDOW
MAX_MINUTES = 7 * 24 * 60
INVALID = object()


class FeedbackItem(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    label = fields.Raw(required=True, allow_none=False)


class FeedbackBody(Schema):
    feedback = fields.List(fields.Nested(FeedbackItem, unknown=RAISE), required=True,
                           validate=validate.Length(min=1, max=MAX_FEEDBACK))


@bp.post("/<model_name:name>/feedback")
@require_scope("predict")
def feedback(name: str):
    limits.charge_request()
    model = _any_version(current_app.extensions["catalog"].model(name))
    # one object per item: a body of more objects is refused before it is parsed
    body = read_json(container_budget(MAX_FEEDBACK, 0), max_rows=MAX_FEEDBACK, limit="MAX_FEEDBACK")
    items = _load_feedback(body, model.manifest["task"], model.manifest["output"].get("classes"))
    try:
        result = current_app.extensions["monitoring"].log.record_feedback(name, items)
    except sqlite3.Error:
        raise StoreUnavailable(details={"model": name}) from None
    return json_response(result)


@bp.get("/<model_name:name>/monitoring")
@require_scope("read")
def monitoring(name: str):
    limits.charge_request()
    window, minutes = _window(), int_arg("minutes", low=1, high=MAX_MINUTES)
    if window and minutes:
        raise validation_failed({"minutes": ["Give window (predictions) or minutes, not both."]}, "the query")
    return json_response(current_app.extensions["monitoring"].model_report(name, window, minutes))


def _load_feedback(payload: Any, task: str, classes: list | None) -> list[dict]:
    try:
        items = FeedbackBody().load(payload if isinstance(payload, dict) else {"feedback": None},
                                    unknown=RAISE)["feedback"]
    except ValidationError as exc:
        raise validation_failed(exc.normalized_messages(), "the feedback") from None
    bad = {}
    for row, item in enumerate(items):
        label = check_label(item["label"], task, classes)
        if label is INVALID:
            expected = "a finite number" if task == "regression" else f"one of the classes {classes}"
            bad[row] = {"label": [f"Must be {expected}."]}
        else:
            item["label"] = label
    if bad:
        raise validation_failed({"feedback": bad}, "the feedback")
    return items


def check_label(value: Any, task: str, classes: list | None) -> Any:
    """Return the label in the model's own terms (a class, or a number), or ``INVALID``."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in classes or ()):
        return INVALID
    if task == "regression":
        ok = isinstance(value, int | float) and math.isfinite(value)
        return float(value) if ok else INVALID
    for cls in classes or ():
        if value == cls or (isinstance(cls, int | float) and isinstance(value, str) and value == str(cls)):
            return cls
    return INVALID


def _window() -> int | None:
    return int_arg("window", low=10, high=MAX_WINDOW)


def _any_version(state: ModelState):
    """The version whose manifest says what labels look like: production, else any loaded one."""
    for version in (state.labels.get("production"), *sorted(state.versions, reverse=True)):
        model = state.available(version)
        if model is not None:
            return model
    raise ModelUnavailable(details={"model": state.name})
