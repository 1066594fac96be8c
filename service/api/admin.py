"""Admin surface: labels, rollout, promotion, rollback, history and comparison.

Every change is validated here (marshmallow) and again by the registry, written atomically,
recorded in the history with the caller's key id, and applied to this worker at once (the
others follow within REGISTRY_POLL_SECONDS).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.api.auth import actor, require_scope
from service.api.io import int_arg, json_response, load_body, read_json
from service.errors import (
    ArtifactError,
    ChangeRefused,
    RegistryChangeBlocked,
    RegistryStateUnavailable,
    RegistryUnreadable,
    ValidationFailed,
)
from service.models import comparison, registry, registry_anchor
from service.models.rollout import MAX_WINDOW_SECONDS, check_budget, check_canary, check_fallback, check_rules, check_shadow
from service.serving.schemas import StrictBoolean

bp = Blueprint("admin", __name__, url_prefix="/v1/models")


class LabelBody(Schema):
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    reason = fields.String(load_default="", validate=validate.Length(max=1000))
    force = StrictBoolean(load_default=False)  # move to a version that changes meaning (breaking)


class ReasonBody(Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=1000))


class RolloutBody(Schema):
    """Each part is checked by service.models.rollout's own rule (one rule, one status: 422);
    what depends on the versions on disk is refused later by the registry (409)."""

    canary = fields.Raw(allow_none=True)
    shadow = fields.Raw()
    fallback = fields.Raw(allow_none=True)
    budget_ms = fields.Raw(allow_none=True)
    rules = fields.Raw()
    reason = fields.String(load_default="", validate=validate.Length(max=1000))

    @validates_schema
    def _follow_the_rollout_rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        for name, check in ROLLOUT_CHECKS.items():
            if name in data:
                try:
                    check(data[name])
                except ValueError as exc:
                    raise ValidationError(str(exc), field_name=getattr(exc, "field", None) or name) from None


ROLLOUT_CHECKS = {"canary": check_canary, "shadow": check_shadow, "fallback": check_fallback,
                  "budget_ms": check_budget, "rules": check_rules}


@bp.put("/<model_name:name>/labels/<label_name:label>")
@require_scope("admin")
def set_label(name: str, label: str):
    body = load_body(LabelBody(), read_json())
    return _apply(name, registry.set_label, label, body["version"], reason=body["reason"], signed=True,
                  force=body["force"])


@bp.delete("/<model_name:name>/labels/<label_name:label>")
@require_scope("admin")
def remove_label(name: str, label: str):
    reason = request.args.get("reason", "")
    return _apply(name, registry.remove_label, label, reason=reason[:1000])


@bp.get("/<model_name:name>/rollout")
@require_scope("read", "admin")
def show_rollout(name: str):
    state = _read_state(name)
    return json_response({"model": name, "labels": state["labels"], "rollout": state["rollout"],
                          "production_stack": state["production_stack"]})


@bp.put("/<model_name:name>/rollout")
@require_scope("admin")
def set_rollout(name: str):
    body = load_body(RolloutBody(), read_json())
    reason = body.pop("reason")
    if not body:
        raise ValidationFailed("Give at least one of canary, shadow, fallback, budget_ms or rules.")
    return _apply(name, registry.set_rollout, reason=reason, signed=True, **body)


@bp.post("/<model_name:name>:promote")
@require_scope("admin")
def promote(name: str):
    return _apply(name, registry.promote, reason=_reason(), signed=True)


@bp.post("/<model_name:name>:rollback")
@require_scope("admin")
def rollback(name: str):
    return _apply(name, registry.rollback, reason=_reason(), signed=True)


@bp.get("/<model_name:name>/history")
@require_scope("read", "admin")
def history(name: str):
    return json_response({"model": name, "history": _read_state(name)["history"]})


@bp.get("/<model_name:name>/comparison")
@require_scope("read", "admin")
def compare(name: str):
    catalog = current_app.extensions["catalog"]
    catalog.model(name)
    window = _window_seconds()
    try:
        return json_response(comparison.compare(current_app.extensions["store"], catalog.root, name, window))
    except RegistryUnreadable as exc:
        raise _unreadable(exc, RegistryStateUnavailable) from None


def _apply(name: str, change, *args: Any, reason: str, signed: bool = False, **kwargs: Any):
    """Run a registry change as the caller, answer with its history entry, and apply it here now."""
    catalog = current_app.extensions["catalog"]
    catalog.model(name)  # 404 before anything touches the disk
    if signed:
        kwargs["signing_key"] = catalog.signing_key  # the keys this server verifies with, never a private one
    try:
        with registry_anchor.registry_changes(current_app.extensions["store"]):
            entry = change(catalog.root, name, *args, actor=actor(), reason=reason, **kwargs)
    except RegistryUnreadable as exc:
        raise _unreadable(exc, RegistryChangeBlocked) from None
    except (ValueError, ArtifactError) as exc:
        raise ChangeRefused(str(exc), details={"model": name}) from None
    catalog.refresh()
    if "checkpoints" in current_app.extensions:  # anchor the change outside the database now
        current_app.extensions["checkpoints"].after_change()
    return json_response({"model": name, "change": entry})


def _read_state(name: str) -> dict[str, Any]:
    catalog = current_app.extensions["catalog"]
    catalog.model(name)
    try:
        return registry.read_state(catalog.root, name)
    except RegistryUnreadable as exc:
        raise _unreadable(exc, RegistryStateUnavailable) from None


def _unreadable(exc: RegistryUnreadable, error: type[RegistryStateUnavailable | RegistryChangeBlocked]):
    """Say what is wrong with registry.json (no server path) and how the operator repairs it."""
    name = exc.model
    what = (f"Nothing was changed: the registry state of {name!r} cannot be read ({exc.reason}), "
            "and an admin call never overwrites it." if error is RegistryChangeBlocked
            else f"The registry state of {name!r} cannot be read ({exc.reason}).")
    details: dict[str, Any] = {"model": name, "reason": exc.reason, "last_good": exc.last_good}
    if exc.last_good:
        details["restore_command"] = f"python -m service registry restore {name}"
        fix = (f" Its last-good copy is intact: restore it with `{details['restore_command']}` "
               "on the server, or repair registry.json by hand.")
    else:
        fix = " There is no last-good copy to restore: repair registry.json by hand."
    return error(what + fix, details=details)


def _reason() -> str:
    if not request.content_length:
        return ""
    return load_body(ReasonBody(), read_json())["reason"]


def _window_seconds() -> int:
    return int_arg("window", low=1, high=MAX_WINDOW_SECONDS, default=300)
