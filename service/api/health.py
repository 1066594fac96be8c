"""Liveness and readiness probes; open to all, no API key."""

from __future__ import annotations

from flask import Blueprint, current_app

from service.api.io import json_response
from service.errors import NotReady

bp = Blueprint("health", __name__)

PUBLIC_FIELDS = ("status", "registry", "registry_code")  # what an unauthenticated probe sees per model with keys on


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """200 when this worker can serve every production model, else 503 (``Catalog.readiness``).

    An unreadable registry.json shows as ``registry_error`` (and ``registry``: where the state
    served comes from; ``registry_code``: ``registry_unreadable``) on the model. So does one
    refused because it does not match the audit trail (``registry_unverified``: edited outside
    the server's tools) or cannot be checked (``registry_unchecked``: the database does not
    answer). Serving from the last-good copy, or what this worker verified before, stays 200,
    problem reported: the state is the last one committed and every worker agrees on it. A
    model with versions and no state at all (no usable file or copy) is 503,
    ``REGISTRY_UNREADABLE``. Probes without a key see the code, never the message.

    ``recording`` is this worker's record path: ``ok``; ``spooling`` (the store has not taken
    answered records for a while: they wait in the on-disk spool); ``degraded`` (records were
    dropped in the last minute: the spool was full or unwritable). Serving is unaffected: 200.
    """
    ready, report = current_app.extensions["catalog"].readiness()
    recording = current_app.extensions["observer"].recording()
    if _keys_on():
        # probes carry no key: with keys on, say how many models and which state, not why
        report = {name: {k: entry[k] for k in PUBLIC_FIELDS if k in entry} for name, entry in report.items()}
        recording = {"status": recording["status"]}
    if not ready:
        raise NotReady(details={"models": report, "recording": recording})
    return json_response({"status": "ready", "models": report, "recording": recording})


def _keys_on() -> bool:
    # a bare key store (keys on) or a policy whose open scopes are empty (API_KEYS_FILE set)
    security = current_app.extensions.get("security")
    return security is not None and not getattr(security, "open_scopes", frozenset())
