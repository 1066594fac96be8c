"""Model metadata: what is served, its versions, labels, schema and metrics.

Personal-data features are shown by ``service.models.pii.public_input``: no category, bound,
salt or digest of theirs reaches a read key, whatever the manifest on disk holds.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from service.api import explaining
from service.api.auth import require_scope
from service.api.io import json_response
from service.errors import VersionNotFound
from service.models import pii
from service.serving.catalog import ModelState, VersionState

bp = Blueprint("models", __name__, url_prefix="/v1/models")

SUMMARY_KEYS = ("created_at", "created_by", "description", "changelog", "parent_version", "task", "estimator",
                "content_sha256")
DETAIL_KEYS = ("libraries", "files", "input", "output", "metrics", "training_data", "evaluation_data", "subject",
               "retrain")


@bp.get("")
@require_scope("read")
def list_models():
    catalog = current_app.extensions["catalog"]
    return json_response({"models": [_model_summary(m) for m in catalog.models()]})


@bp.get("/<model_name:name>")
@require_scope("read")
def show_model(name: str):
    state = current_app.extensions["catalog"].model(name)
    body = _model_summary(state)
    body["versions"] = [_version_summary(v) for v in state.versions.values()]
    return json_response(body)


@bp.get("/<model_name:name>/versions/<version_number:version>")
@require_scope("read")
def show_version(name: str, version: int):
    state = current_app.extensions["catalog"].model(name)
    entry = state.versions.get(version)
    if entry is None:
        raise VersionNotFound(details={"model": name, "version": version})
    body = _version_summary(entry)
    body["labels"] = sorted(label for label, v in state.labels.items() if v == version)
    if entry.model is not None:
        body.update({k: entry.model.manifest.get(k) for k in DETAIL_KEYS})
        body["input"] = pii.public_input(body["input"])
        # what a client needs to size its :explain requests (the limit is the same in every worker)
        body["explanations"] = explaining.describe(entry.model)
    return json_response(body)


def _model_summary(state: ModelState) -> dict[str, Any]:
    return {
        "name": state.name,
        "versions": sorted(state.versions),
        "labels": dict(state.labels),
        "status": {str(v): s.status for v, s in sorted(state.versions.items())},
    }


def _version_summary(entry: VersionState) -> dict[str, Any]:
    body: dict[str, Any] = {"version": entry.version, "status": entry.status}
    if entry.reason:
        body["reason"] = entry.reason
    if entry.model is not None:
        body.update({k: entry.model.manifest.get(k) for k in SUMMARY_KEYS})
        body["load_seconds"] = round(entry.model.load_seconds, 4)
        body["backend"] = entry.model.backend  # onnx or joblib: what answers this version in this worker
        body["serving"] = entry.model.serving()  # and how far from scikit-learn it was measured to answer
    return body
