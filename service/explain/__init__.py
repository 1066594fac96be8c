"""Per-prediction explanations: each feature's contribution to one model output, and the base.

``explain(model, columns)`` picks the method once per model version (``methods``: exact for
linear models and tree ensembles, a sampled estimate for anything else), checks on reference
rows that base + contributions reproduce the model's output before trusting an exact method,
and returns an ``Explanation`` whose ``items()`` are the wire's ``{"base", "contributions"}``.
Contributions are summed back to the manifest's input features.

``prepare`` (called as a version loads) chooses the method and measures what an explained row
costs (``cost``); ``admit`` refuses, before any work, a request with more rows than that cost
allows within the budget. No Flask.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ValidationFailed
from service.explain import cost_file, methods
from service.explain.background import reference_rows
from service.explain.columns import Unsupported
from service.explain.cost import Cost, RowLimit, measure, row_limit
from service.models import parity

log = logging.getLogger(__name__)

#: Largest gap between base + contributions and the model's output an exact method may show: the
#: served backend's own bar (``parity.TOLERANCE``), so an explanation adds up to what was answered.
TOLERANCE = parity.TOLERANCE
CHECK_ROWS = 8
#: Reference rows behind the global importance of a model card (fewer for the sampled method).
IMPORTANCE_ROWS = 200

_methods: weakref.WeakKeyDictionary[Any, methods.Method] = weakref.WeakKeyDictionary()
_costs: weakref.WeakKeyDictionary[Any, Cost] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class ExplanationUnavailable(ValidationFailed):
    """The request is valid but this model cannot explain it as asked (the message says why)."""

    code = "explanation_unavailable"


class TooManyRowsToExplain(ValidationFailed):
    """More rows than this version may explain in one request (``RowLimit``: its cost and the budget)."""

    code = "too_many_rows_to_explain"


@dataclass(frozen=True)
class Budget:
    """What one explanation request may cost: the settings ``row_limit`` reads."""

    max_seconds: float  # EXPLAIN_MAX_SECONDS
    max_rows: int  # EXPLAIN_MAX_ROWS; 0 = batch_rows
    batch_rows: int  # MAX_BATCH_ROWS


@dataclass(frozen=True)
class Explanation:
    """Contributions of ``features`` to ``output`` for n rows and k outputs (k = 1 unless per class)."""

    method: str
    output: str
    exact: bool
    features: list[str]
    classes: list[Any] | None
    base: np.ndarray  # (k,)
    contributions: np.ndarray  # (n, d, k); NaN where a feature's value was not available

    @property
    def per_class(self) -> bool:
        return self.base.shape[0] > 1

    def summary(self) -> dict[str, Any]:
        """What the numbers mean: the method, the output they add up to, and for which class(es)."""
        about: dict[str, Any] = {"method": self.method, "output": self.output, "exact": self.exact}
        if self.classes is not None:
            about["classes" if self.per_class else "class"] = self.classes if self.per_class else self.classes[0]
        if not self.exact:
            about["note"] = ("approximate: a sampled estimate against reference rows; "
                             "base + contributions still equals the output")
        return about

    def items(self) -> list[dict[str, Any]]:
        """One ``{"base", "contributions": {feature: c}}`` per row; lists in class order when per class."""
        base = _value(self.base)
        return [{"base": base, "contributions": {name: _value(row[j]) for j, name in enumerate(self.features)}}
                for row in self.contributions]


def method_for(model: Any) -> methods.Method:
    """Return how ``model`` (a LoadedModel) is explained, choosing and checking it once per version."""
    found = _methods.get(model.estimator)
    if found is None:
        with _lock:
            found = _methods.get(model.estimator)
            if found is None:
                found = _methods[model.estimator] = _choose(model)
    return found


def prepare(model: Any, folder: Path | None = None) -> Cost | None:
    """Choose how ``model`` is explained and measure its cost per row, once per version (off any request).

    With ``folder`` (the server's metrics folder) the workers share one measurement per version.
    Raises ``ExplanationUnavailable`` for a model that cannot be explained.
    """
    method = method_for(model)
    path = None if folder is None else cost_file.path_for(folder, model.name, model.version, _digest(model))
    found = cost_file.shared(path, lambda: measure(
        method.name, method.run, model.predict, lambda n: reference_rows(model.manifest, n, model.estimator)))
    if found is not None:
        _costs[model.estimator] = found
    return found


def preparer(folder: Path | None) -> Callable[[Any], None]:
    """The catalog's ``prepare`` step: ``prepare`` each version as it loads, and log what it found."""
    def run(model: Any) -> None:
        start = time.perf_counter()
        where = {"model": model.name, "version": model.version}
        try:
            found = prepare(model, folder)
        except ExplanationUnavailable as exc:
            log.info("model version cannot be explained", extra=where | {"reason": exc.message})
            return
        if found is None:
            log.warning("explanation cost not measured: no reference rows; one row per request", extra=where)
            return
        log.info("explanation cost measured", extra=where | {
            "method": found.method, "explain_seconds_per_row": round(found.explain_seconds_per_row, 6),
            "cost_factor": round(found.factor, 1), "seconds": round(time.perf_counter() - start, 3)})
    return run


def cost_of(model: Any) -> Cost | None:
    """The cost ``prepare`` measured for this version, or None."""
    return _costs.get(model.estimator)


def limit_for(model: Any, budget: Budget) -> RowLimit:
    """Most rows one request may have explained by ``model`` within ``budget``, and why."""
    method = _methods.get(model.estimator)
    return row_limit(cost_of(model), max_seconds=budget.max_seconds, max_rows=budget.max_rows,
                     batch_rows=budget.batch_rows, method_rows=method.max_rows if method is not None else None)


def admit(model: Any, rows: int, budget: Budget) -> RowLimit:
    """Return the version's row limit, or raise 422 (``TooManyRowsToExplain``) when ``rows`` exceed it.

    A version that was not prepared first learns here whether it can be explained at all (422
    ``explanation_unavailable``, the more useful answer); it is then held to one row a request.
    """
    if cost_of(model) is None:
        method_for(model)
    limit = limit_for(model, budget)
    if rows > limit.rows:
        raise TooManyRowsToExplain(
            f"{model.name} version {model.version} explains at most {limit.rows} rows per request "
            f"({limit.describe()}); this one has {rows}: send fewer rows per request.",
            details={"model": model.name, "version": model.version, "rows": rows, **limit.to_dict()})
    return limit


def describe(model: Any, budget: Budget) -> dict[str, Any]:
    """The version's explanation method and row limit, as its metadata shows them."""
    method = _methods.get(model.estimator)
    about: dict[str, Any] = {"method": method.name if method is not None else None}
    if method is not None:
        about.update(output=method.output, exact=method.exact)
    return about | limit_for(model, budget).to_dict()


def explain(model: Any, columns: dict[str, np.ndarray]) -> Explanation:
    """Explain validated input columns with the version that answers; 422 past the method's row limit."""
    method = method_for(model)
    n = len(next(iter(columns.values()))) if columns else 0
    if method.max_rows is not None and n > method.max_rows:
        raise ExplanationUnavailable(
            f"{model.name} version {model.version} is explained by {method.name.replace('_', ' ')}, limited to "
            f"{method.max_rows} rows per request; this one has {n}: send fewer rows per request.",
            details={"method": method.name, "max_rows": method.max_rows, "rows": n})
    base, contributions = method.run(columns)
    return Explanation(method.name, method.output, method.exact, [f["name"] for f in model.features],
                       method.classes, np.asarray(base, dtype=np.float64), contributions)


def importance(model: Any) -> dict[str, Any] | None:
    """Mean absolute contribution of each feature on reference rows (global importance), or None."""
    method = method_for(model)
    rows = reference_rows(model.manifest, min(IMPORTANCE_ROWS, method.max_rows or IMPORTANCE_ROWS), model.estimator)
    if rows is None:
        return None
    _, contributions = method.run(rows)
    mean = np.abs(contributions).mean(axis=0).sum(axis=1)  # summed over classes when per class
    order = np.argsort(-mean, kind="stable")
    names = [f["name"] for f in model.features]
    return {"method": method.name, "output": method.output, "rows": len(contributions),
            "features": {names[i]: float(mean[i]) for i in order}}


def _choose(model: Any) -> methods.Method:
    """The first exact method that reproduces the model's output on reference rows, else sampling."""
    reasons = []
    rows = reference_rows(model.manifest, CHECK_ROWS, model.estimator)
    for build in (methods.linear, methods.tree):
        try:
            method = build(model)
            if rows is not None:
                base, contributions = method.run(rows)
                gap = np.abs(base + contributions.sum(axis=1) - method.outputs(rows)).max()
                if not gap <= TOLERANCE:
                    raise Unsupported(f"{method.name} is off the model's output by {gap:.3g}")
            return method
        except Unsupported as exc:
            reasons.append(str(exc))
        except Exception as exc:  # the model is user code: an exact method that cannot run is skipped
            # an exception's text may quote an input value, and a personal one must not reach the answer
            said = "" if any(f.get("pii") for f in model.features) else f": {exc}"
            reasons.append(f"{build.__name__}: {type(exc).__name__}{said}")
    try:
        return methods.sampled(model)
    except Unsupported as exc:
        reasons.append(str(exc))
    raise ExplanationUnavailable(f"{model.name} version {model.version} cannot be explained.",
                                 details={"reasons": reasons})


def _digest(model: Any) -> str:
    """The model file's sha256: a version number reused after a removal names another model."""
    files = model.manifest.get("files") or {}
    entry = files.get(model.manifest.get("model_file")) or {}
    return str(entry.get("sha256") or "unknown")


def _value(values: np.ndarray) -> Any:
    """A scalar for one output, a list per class otherwise; NaN or infinity (not available) becomes None.

    JSON cannot carry either, and an overflowing model on sampled rows can produce both.
    """
    out = [float(v) if np.isfinite(v) else None for v in values]
    return out[0] if len(out) == 1 else out
