"""Which version answers a request, and what a legal rollout looks like.

A model's rollout (kept in ``registry.json`` by ``registry``) names a canary version with a
weight in percent, shadow versions, a fallback version, a time budget and the rules for
automatic rollback. This module checks such values and routes one request; it is pure: no
Flask, no disk, no clock.

Sticky routing hashes ``model`` and the routing key into one of ``BUCKETS`` buckets; a key is on
the canary when its bucket is below the weight's share of them. The bucket of a key never
changes, so the same key keeps its version while the weight stays, and raising the weight only
moves keys onto the canary.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from typing import Any

PRODUCTION = "production"
CANARY = "canary"
BUCKETS = 10_000  # weights resolve to 0.01 %
MAX_ROUTING_KEY = 256
#: The longest window any rule or comparison looks back over (a month of traffic).
MAX_WINDOW_SECONDS = 30 * 24 * 3600
MAX_BUDGET_MS = 600_000.0  # ten minutes: beyond any worker timeout
#: Automatic-rollback rules; null switches one off. The last three read the canary's monitoring
#: figures (live metrics from feedback, prediction drift) and apply only once those have enough data.
DEFAULT_RULES: dict[str, Any] = {"window_seconds": 300, "min_requests": 50, "max_error_rate": 0.05, "max_p99_ms": None,
                                 "min_live_accuracy": None, "max_live_rmse": None, "max_prediction_psi": None}


def default_rollout() -> dict[str, Any]:
    """Return the rollout of a model that has none: production answers everything."""
    return {"canary": None, "shadow": [], "fallback": None, "budget_ms": None, "rules": dict(DEFAULT_RULES)}


# -- routing ---------------------------------------------------------------------------------


def bucket(model: str, routing_key: str) -> int:
    """Return the fixed bucket (0 to ``BUCKETS - 1``) of a routing key for a model."""
    digest = hashlib.sha256(f"{model}\0{routing_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_version(model: str, production: int, rollout: dict[str, Any], routing_key: str | None,
                   rand: Callable[[], float] = random.random) -> tuple[int, str]:
    """Return the version that answers an unqualified request and its role ("production" or "canary")."""
    canary = rollout.get("canary") if rollout else None
    weight = float(canary["weight"]) if canary else 0.0
    if weight <= 0:
        return production, PRODUCTION
    if routing_key is not None:
        on_canary = bucket(model, routing_key) < round(weight * BUCKETS / 100)
    else:
        on_canary = rand() * 100 < weight
    return (int(canary["version"]), CANARY) if on_canary else (production, PRODUCTION)


def routing_key_from(header_value: str | None, body_value: Any) -> str | None:
    """Return the request's routing key: the header's when usable, else the body field's, else None."""
    for value in (header_value, body_value):
        if isinstance(value, str) and value.strip() and len(value) <= MAX_ROUTING_KEY:
            return value
    return None


# -- checking a rollout ----------------------------------------------------------------------


def check_canary(canary: Any) -> dict[str, Any] | None:
    """Return ``canary`` as ``{"version": int, "weight": float}`` (or None), else raise ``ValueError``."""
    if canary is None:
        return None
    if not isinstance(canary, dict) or set(canary) != {"version", "weight"}:
        raise ValueError('canary must be {"version": <int>, "weight": <0..100>} or null')
    return {"version": _version(canary["version"], "canary version", "canary.version"),
            "weight": _number(canary["weight"], "canary weight", low=0, high=100, field="canary.weight")}


def check_shadow(shadow: Any) -> list[int]:
    """Return ``shadow`` as a list of distinct versions, else raise ``ValueError``."""
    if not isinstance(shadow, list | tuple):
        raise ValueError("shadow must be a list of versions")
    versions = [_version(v, "shadow version", f"shadow.{i}") for i, v in enumerate(shadow)]
    if len(set(versions)) != len(versions):
        raise ValueError("shadow versions must be distinct")
    return versions


def check_fallback(fallback: Any) -> int | None:
    """Return ``fallback`` as a version (or None), else raise ``ValueError``."""
    return None if fallback is None else _version(fallback, "fallback")


def check_budget(budget_ms: Any) -> float | None:
    """Return the time budget in milliseconds (or None for no budget), else raise ``ValueError``."""
    return None if budget_ms is None else _number(budget_ms, "budget_ms", low=0.1, high=MAX_BUDGET_MS)


def check_rules(rules: Any) -> dict[str, Any]:
    """Return ``rules`` when every key is a known automatic-rollback rule with a legal value."""
    if not isinstance(rules, dict):
        raise ValueError("rules must be an object")
    unknown = sorted(map(str, set(rules) - set(DEFAULT_RULES)))
    if unknown:
        raise ValueError(f"{len(unknown)} unknown rule name(s); known rules: {', '.join(DEFAULT_RULES)}")
    checked = {}
    for key, value in rules.items():
        if key == "window_seconds":
            checked[key] = _number(value, key, low=1, high=MAX_WINDOW_SECONDS, field=f"rules.{key}")
        elif key == "min_requests":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidSetting("min_requests must be an integer of at least 1", f"rules.{key}")
            checked[key] = value
        elif value is None:  # max_error_rate / max_p99_ms: null switches the rule off
            checked[key] = None
        elif key in ("max_error_rate", "min_live_accuracy"):
            checked[key] = _number(value, key, low=0, high=1, field=f"rules.{key}")
        elif key == "max_p99_ms":
            checked[key] = _number(value, key, low=0.001, high=MAX_BUDGET_MS, field=f"rules.{key}")
        else:  # max_live_rmse, max_prediction_psi
            checked[key] = _number(value, key, low=0.000001, high=1e12, field=f"rules.{key}")
    return checked


class InvalidSetting(ValueError):
    """A rollout value outside its rule; ``field`` is its dotted path in the admin body (``canary.weight``)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _version(value: Any, what: str, field: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSetting(f"{what} must be a positive integer", field)
    return value


def _number(value: Any, what: str, *, low: float | None = None, high: float | None = None,
            above: float | None = None, field: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or (low is not None and value < low) or (high is not None and value > high) \
            or (above is not None and value <= above):
        bounds = f"above {above:g}" if above is not None else f"from {low:g} to {high:g}"
        raise InvalidSetting(f"{what} must be a number {bounds}", field)
    return float(value)
