"""Erasure over HTTP: ``POST /v1/subjects:erase`` deletes what the prediction log holds about one person.

Admin scope, a JSON body (``{"subject": "<the subject feature's value>", "model": "<optional>"}``),
and the same cross-site rules as every admin change. The answer and the audit record carry the
subject's keyed hash and the counts per table, never the subject itself; an unknown subject
answers 200 with zero counts.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from marshmallow import Schema, ValidationError, fields

from service.api.auth import actor, require_scope
from service.api.io import json_response, load_body, read_json
from service.models.artifacts import MODEL_NAME_RE
from service.security import audit

bp = Blueprint("subjects", __name__, url_prefix="/v1")

#: Longest subject value accepted (customer ids, e-mails, document numbers are far shorter).
MAX_SUBJECT_CHARS = 256
#: What the audit record's target starts with; the subject's keyed hash follows.
TARGET = "subject:"


def _subject(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError("Must be a string or an integer: the value of the model's subject feature.")
    if isinstance(value, str) and not 0 < len(value) <= MAX_SUBJECT_CHARS:
        raise ValidationError(f"Must have 1 to {MAX_SUBJECT_CHARS} characters.")


def _model(value: str) -> None:
    if not MODEL_NAME_RE.fullmatch(value):
        raise ValidationError("Must be a model name (lower-case letters, digits, - and _).")


class EraseBody(Schema):
    subject = fields.Raw(required=True, validate=_subject, metadata={"type": ["string", "integer"]})
    model = fields.String(load_default=None, allow_none=True, validate=_model,
                          metadata={"pattern": f"^{MODEL_NAME_RE.pattern}$"})


class ErasureResult(Schema):
    subject_hash = fields.String(required=True)
    model = fields.String(allow_none=True, required=True)
    deleted = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


@bp.post("/subjects:erase")
@require_scope("admin")
def erase():
    """Delete one person's logged predictions, feedback and batch rows (counts per table)."""
    body = load_body(EraseBody(), read_json())
    store = current_app.extensions["store"]
    subject_hash, counts = current_app.extensions["prediction_log"].erase(body["subject"], body["model"])
    audit.record(store, actor(), "subject.erase", TARGET + subject_hash, {"model": body["model"], "deleted": counts})
    return json_response({"subject_hash": subject_hash, "model": body["model"], "deleted": counts})

