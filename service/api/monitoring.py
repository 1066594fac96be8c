"""Ground truth in, monitoring figures out: feedback and the per-model monitoring report."""

from __future__ import annotations

import sqlite3

from flask import Blueprint, current_app, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.api.io import json_response, read_json
from service.errors import StoreUnavailable, ValidationFailed
from service.security import require_scope

bp = Blueprint("monitoring", __name__, url_prefix="/v1/models")

MAX_FEEDBACK = 10_000
MAX_WINDOW = 100_000


class FeedbackItem(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    label = fields.Raw(required=True, allow_none=False)


class FeedbackBody(Schema):
    feedback = fields.List(fields.Nested(FeedbackItem, unknown=RAISE), required=True,
                           validate=validate.Length(min=1, max=MAX_FEEDBACK))


@bp.post("/<model_name:name>/feedback")
@require_scope("predict")
def feedback(name: str):
    current_app.extensions["catalog"].model(name)
    items = _load_feedback(read_json())
    try:
        result = current_app.extensions["monitoring"].log.record_feedback(name, items)
    except sqlite3.Error:
        raise StoreUnavailable(details={"model": name}) from None
    return json_response(result)


@bp.get("/<model_name:name>/monitoring")
@require_scope("read")
def monitoring(name: str):
    return json_response(current_app.extensions["monitoring"].model_report(name, _window()))


def _load_feedback(payload) -> list[dict]:
    try:
        return FeedbackBody().load(payload if isinstance(payload, dict) else {"feedback": None}, unknown=RAISE)["feedback"]
    except ValidationError as exc:
        errors = []
        for field, messages in sorted(_flatten(exc.normalized_messages())):
            errors.append({"row": field[1] if len(field) > 1 else None, "field": ".".join(map(str, field)),
                           "messages": messages})
        raise ValidationFailed(f"{len(errors)} invalid value(s) in the feedback; first: {errors[0]['field']}",
                               details={"errors": errors[:50], "error_count": len(errors)}) from None


def _flatten(messages, path=()):
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, (*path, key))
    else:
        yield path, messages if isinstance(messages, list) else [str(messages)]


def _window() -> int | None:
    raw = request.args.get("window")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 10 <= int(raw) <= MAX_WINDOW:
        raise ValidationFailed("window must be a whole number of predictions between 10 and 100000.",
                               details={"errors": [{"row": None, "field": "window",
                                                    "messages": ["Must be between 10 and 100000."]}],
                                        "error_count": 1})
    return int(raw)
