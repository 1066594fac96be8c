"""Liveness and readiness probes; open to all, no API key."""

from __future__ import annotations

from flask import Blueprint, current_app

from service.api.io import json_response
from service.errors import NotReady

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    ready, report = current_app.extensions["catalog"].readiness()
    if current_app.extensions.get("security") is not None:
        # probes carry no key: with keys on, say how many models and which state, not why
        report = {name: {"status": entry["status"]} for name, entry in report.items()}
    if not ready:
        raise NotReady(details={"models": report})
    return json_response({"status": "ready", "models": report})
