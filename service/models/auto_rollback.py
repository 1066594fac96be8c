"""Automatic rollback: a canary that breaks its model's rules goes back to weight 0.

``evaluate`` is the pure part (rules + one version's figures → the broken rules, as
sentences); ``enforce`` applies it to one model through ``registry.update``; ``Guard`` runs
``enforce`` for every model in a daemon thread. Every worker may run a guard: the change is
re-checked under the registry lock, so only the first one acts and the others write nothing.
It never promotes, never touches labels and never imports Flask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from service.models import artifacts, comparison, registry, registry_anchor
from service.models.rollout import DEFAULT_RULES
from service.periodic import Periodic

log = logging.getLogger(__name__)

ACTION = "rollout.auto_rollback"


def _error_rate(limit: float, figures: Mapping[str, Any]) -> str | None:
    rate = figures.get("error_rate")
    if rate is not None and rate > limit:
        return f"error rate {rate:.3g} > {limit:g} over {figures['requests']} requests"
    return None


def _p99(limit: float, figures: Mapping[str, Any]) -> str | None:
    p99 = figures.get("p99_ms")
    if p99 is not None and p99 > limit:
        return f"p99 latency {p99:.1f} ms > {limit:g} ms over {figures['requests']} requests"
    return None


def _live(metric: str) -> Callable[[Mapping[str, Any]], tuple[float, int] | None]:
    """Read a live metric of the canary (value, labelled rows), when there are enough labels."""

    def read(figures: Mapping[str, Any]) -> tuple[float, int] | None:
        performance = (figures.get("monitoring") or {}).get("performance") or {}
        value = (performance.get("metrics") or {}).get(metric)
        if performance.get("status") in (None, "insufficient") or value is None:
            return None
        return float(value), int(performance.get("labelled") or 0)

    return read


def _live_accuracy(limit: float, figures: Mapping[str, Any]) -> str | None:
    seen = _live("accuracy")(figures)
    if seen is not None and seen[0] < limit:
        return f"live accuracy {seen[0]:.3g} < {limit:g} over {seen[1]} labelled predictions"
    return None


def _live_rmse(limit: float, figures: Mapping[str, Any]) -> str | None:
    seen = _live("rmse")(figures)
    if seen is not None and seen[0] > limit:
        return f"live RMSE {seen[0]:.4g} > {limit:g} over {seen[1]} labelled predictions"
    return None


def _prediction_psi(limit: float, figures: Mapping[str, Any]) -> str | None:
    drift = ((figures.get("monitoring") or {}).get("drift") or {}).get("prediction") or {}
    psi = drift.get("psi")
    if drift.get("status") in (None, "insufficient") or psi is None or psi <= limit:
        return None
    return f"prediction drift PSI {psi:.3g} > {limit:g} over {drift.get('n')} predictions"


#: Rule name in ``rollout.rules`` → check(threshold, figures) returning a sentence when broken.
#: A new rule also needs its default and validation in ``service.models.rollout`` (``DEFAULT_RULES``).
RULES: dict[str, Callable[[float, Mapping[str, Any]], str | None]] = {
    "max_error_rate": _error_rate,
    "max_p99_ms": _p99,
    "min_live_accuracy": _live_accuracy,
    "max_live_rmse": _live_rmse,
    "max_prediction_psi": _prediction_psi,
}
#: Rules that need the canary's monitoring figures (computed only when one of them is set).
MONITORING_RULES = ("min_live_accuracy", "max_live_rmse", "max_prediction_psi")


class _NothingToDo(Exception):
    """Raised inside a registry change to leave the file (and its history) untouched."""


def evaluate(rules: Mapping[str, Any] | None, figures: Mapping[str, Any] | None) -> list[str]:
    """Return the rules ``figures`` break, as sentences; none below ``min_requests`` requests."""
    rules = rules or {}
    min_requests = rules.get("min_requests")
    min_requests = DEFAULT_RULES["min_requests"] if min_requests is None else min_requests
    if not figures or figures.get("requests", 0) < max(min_requests, 1):
        return []
    broken = []
    for name, check in RULES.items():
        limit = rules.get(name)
        if limit is not None and (sentence := check(float(limit), figures)):
            broken.append(sentence)
    return broken


def enforce(store: Any, root: Path, name: str, now: float | None = None, actor: str = "guard",
            monitor: Callable[[str, int, float], Mapping[str, Any] | None] | None = None) -> dict[str, Any] | None:
    """Set the canary of ``name`` to weight 0 when it breaks a rule; return the history entry.

    ``monitor(name, version, since)`` gives the canary's monitoring figures for the rules on
    live metrics and prediction drift, from the predictions logged since ``since``.
    """
    now = time.time() if now is None else float(now)
    state = registry.read_state(root, name)
    rollout = state.get("rollout") or {}
    canary = _active_canary(rollout)
    if canary is None:
        return None
    version = canary["version"]
    rules = {**DEFAULT_RULES, **(rollout.get("rules") or {})}
    # Requests before this version's last automatic rollback were already judged: re-enabling
    # the canary must not roll it straight back on the old failures.
    since = max(now - float(rules["window_seconds"]), _last_rollback(state, version))
    # Bounded read: the error rate and request count are exact, p99 is over the newest requests
    # (``comparison.MAX_TRAFFIC_ROWS``), which is what a latency rule should judge anyway.
    figures = comparison.traffic_figures(store, name, since, versions=[version]).get(version)
    if figures and monitor is not None and any(rules.get(rule) is not None for rule in MONITORING_RULES):
        figures = {**figures, "monitoring": monitor(name, version, since)}
    broken = evaluate(rules, figures)
    if not broken:
        return None

    def change(current: dict[str, Any]) -> dict[str, Any]:
        live = _active_canary(current.get("rollout") or {})
        if live is None or live["version"] != version:
            raise _NothingToDo  # another worker (or an operator) got there first
        previous = live["weight"]
        live["weight"] = 0.0
        return {"action": ACTION, "version": version, "previous_weight": previous, "broken": broken}

    try:
        # registry_changes anchors the file this writes, and refuses to write over one the trail does not
        with registry_anchor.registry_changes(store):
            entry = registry.update(root, name, change, actor=actor, reason="; ".join(broken))
    except _NothingToDo:
        return None
    except registry.RegistryUnverified:
        return None  # an edited registry.json: the catalog serves the audited state and says why
    log.error("canary rolled back automatically", extra={"model": name, "version": version, "broken": broken})
    return entry


class Guard:
    """Run ``enforce`` for every model under ``root`` every ``interval_seconds`` in a daemon thread."""

    def __init__(self, store: Any, root: Path, interval_seconds: float,
                 monitor: Callable[[str, int, float], Mapping[str, Any] | None] | None = None):
        self.store = store
        self.monitor = monitor
        self.root = Path(root)
        self.interval_seconds = float(interval_seconds)
        self._loop = Periodic("rollout-guard", self.interval_seconds, self.run_once)

    def start(self) -> None:
        """Start the thread; calling it again while it runs does nothing."""
        self._loop.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to finish and wait up to ``timeout`` seconds for it."""
        self._loop.stop(timeout)

    @property
    def running(self) -> bool:
        return self._loop.running

    def run_once(self) -> list[dict[str, Any]]:
        """Enforce the rules of every model once; return the rollbacks made."""
        entries = []
        for name in artifacts.list_models(self.root):
            try:
                if (entry := enforce(self.store, self.root, name, monitor=self.monitor)) is not None:
                    entries.append(entry)
            except Exception:
                log.exception("rollout guard failed for a model", extra={"model": name})
        return entries


def _active_canary(rollout: Mapping[str, Any]) -> dict[str, Any] | None:
    canary = rollout.get("canary")
    if not isinstance(canary, dict) or not isinstance(canary.get("version"), int):
        return None
    weight = canary.get("weight") or 0
    return canary if isinstance(weight, int | float) and weight > 0 else None


def _last_rollback(state: Mapping[str, Any], version: int) -> float:
    for entry in reversed(state.get("history") or []):
        if isinstance(entry, dict) and entry.get("action") == ACTION and entry.get("version") == version:
            try:
                return datetime.fromisoformat(entry["at"]).timestamp()
            except (KeyError, TypeError, ValueError):
                return 0.0
    return 0.0
