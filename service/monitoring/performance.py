"""Live performance: how a model does on the predictions that received ground truth.

Scores the labelled rows of a window with the same scikit-learn calls and averaging as
``service.models.evaluation.evaluate`` (binary: ``pos_label = classes[1]``; multiclass: macro) and
compares them with the hold-out metrics stored in ``manifest["metrics"]["holdout"]``.
Pure numpy/scikit-learn: no Flask, no I/O, and bad feedback is counted, never raised.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from service.monitoring.drift import STATUSES

INSUFFICIENT = "insufficient"
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")
ERROR_METRICS = frozenset({"rmse", "mae"})
MIN_LABELS = 30
TIMELINE_BUCKETS = 20
MISSING = -1  # class index of a row without ground truth
UNKNOWN = -2  # class index of a value that is none of the model's classes
TOLERANCE = 1e-9  # a value exactly at a threshold does not cross it, whatever the float rounding


@dataclass(frozen=True)
class PerformanceThresholds:
    """When a live metric counts as degraded against its hold-out value."""

    #: accuracy, precision, recall, f1, roc_auc, r2: warn below ``reference - warn_drop`` (absolute)
    warn_drop: float = 0.05
    #: ... and alert below ``reference - alert_drop``
    alert_drop: float = 0.10
    #: rmse, mae: warn above ``reference * (1 + warn_increase)`` (relative)
    warn_increase: float = 0.10
    #: ... and alert above ``reference * (1 + alert_increase)``
    alert_increase: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.warn_drop <= self.alert_drop or not 0 <= self.warn_increase <= self.alert_increase:
            raise ValueError("thresholds must be non-negative with warn <= alert")


DEFAULT_THRESHOLDS = PerformanceThresholds()


def live_performance(task: str, classes: list | None, predictions: np.ndarray, labels: np.ndarray | None,
                     probabilities: np.ndarray | None, reference_metrics: dict, min_labels: int = MIN_LABELS,
                     thresholds: PerformanceThresholds = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Score the labelled rows of a window and compare each metric with the hold-out reference.

    ``labels`` holds JSON values aligned with ``predictions`` (None/NaN where no feedback
    came); labels that are not among ``classes`` are counted as ``unknown_labels`` and left
    out. Below ``min_labels`` scored rows the status is ``insufficient`` and no check runs.
    """
    n = len(predictions)
    labels = np.full(n, None, dtype=object) if labels is None else labels
    if task == "regression":
        truth, predicted = coerce_numbers(labels), coerce_numbers(predictions)
        unknown_labels, unknown_predictions = int(np.isinf(truth).sum()), int(np.isinf(predicted).sum())
        rows = np.isfinite(truth) & np.isfinite(predicted)
        live = _regression_metrics(truth[rows], predicted[rows])
        names = REGRESSION_METRICS
    else:
        classes = list(classes) if classes is not None else _classes_seen(predictions, labels)
        truth, predicted = coerce_labels(labels, classes), coerce_labels(predictions, classes)
        unknown_labels, unknown_predictions = int((truth == UNKNOWN).sum()), int((predicted == UNKNOWN).sum())
        rows = (truth >= 0) & (predicted >= 0)
        proba = _probability_matrix(probabilities, n, len(classes))
        live = _classification_metrics(truth[rows], predicted[rows], None if proba is None else proba[rows], len(classes))
        names = CLASSIFICATION_METRICS
    labelled = int(rows.sum())
    holdout = _holdout(reference_metrics)
    reference = {m: holdout[m] for m in names if m in holdout}
    delta = {m: live[m] - reference[m] for m in live if m in reference}
    checks = [] if labelled < min_labels else [_check(m, live[m], reference[m], thresholds) for m in delta]
    status = INSUFFICIENT if labelled < min_labels else worst_status(c["status"] for c in checks)
    return {"status": status, "task": task, "labelled": labelled, "min_labels": min_labels,
            "unknown_labels": unknown_labels, "unknown_predictions": unknown_predictions,
            "metrics": live, "reference": reference, "delta": delta, "checks": checks}


def outcomes(task: str, classes: list | None, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Give each row 1.0/0.0 (correct or not) or its absolute error; NaN where there is no usable label."""
    if task == "regression":
        error = np.abs(coerce_numbers(labels) - coerce_numbers(predictions))
        return np.where(np.isfinite(error), error, np.nan)
    classes = list(classes) if classes is not None else _classes_seen(predictions, labels)
    truth, predicted = coerce_labels(labels, classes), coerce_labels(predictions, classes)
    return np.where((truth >= 0) & (predicted >= 0), (truth == predicted).astype(float), np.nan)


def timeline(ts: np.ndarray, correct_or_error: np.ndarray, buckets: int = TIMELINE_BUCKETS) -> list[dict[str, Any]]:
    """Average ``correct_or_error`` (accuracy, or MAE) over equal-width time buckets, for a chart.

    ``ts`` are unix seconds (or datetime64). Rows with a NaN value are skipped; empty buckets
    keep their place with ``n`` 0 and ``value`` None so the time axis stays even.
    """
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    ts = np.asarray(ts)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ns]").astype(np.int64) / 1e9
    ts, values = ts.astype(float), np.asarray(correct_or_error, dtype=float)
    keep = np.isfinite(ts) & np.isfinite(values)
    ts, values = ts[keep], values[keep]
    if not len(ts):
        return []
    start, end = float(ts.min()), float(ts.max())
    buckets = 1 if start == end else buckets
    edges = np.linspace(start, end, buckets + 1)
    index = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, buckets - 1)
    counts = np.bincount(index, minlength=buckets)
    sums = np.bincount(index, weights=values, minlength=buckets)
    return [{"start": float(edges[i]), "end": float(edges[i + 1]), "n": int(counts[i]),
             "value": float(sums[i] / counts[i]) if counts[i] else None} for i in range(buckets)]


def coerce_labels(values: Iterable[Any], classes: list) -> np.ndarray:
    """Map JSON values onto indices into ``classes``: ``1``, ``1.0`` and ``"1"`` all find class ``1``.

    Missing values (None, NaN) become ``MISSING`` and values that are no class ``UNKNOWN``.
    """
    lookup: dict[tuple[str, Any], int] = {}
    for index, cls in enumerate(classes):
        lookup.setdefault(_class_key(cls), index)
    def coerce(value: Any) -> int:
        if _is_missing(value):
            return MISSING
        return next((lookup[k] for k in _value_keys(value) if k in lookup), UNKNOWN)

    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "biuf" and len(values):
        # a numeric column (predictions): once per distinct bit pattern, so -0.0 and 0.0 stay apart
        bits = values.view(f"u{values.itemsize}") if values.dtype.kind == "f" else values
        _, first, inverse = np.unique(bits, return_index=True, return_inverse=True)
        return np.array([coerce(values[i]) for i in first], dtype=np.int64)[inverse.ravel()]
    # once per distinct value: a window repeats a few classes (its text tells -0.0 from 0.0)
    seen: dict[tuple[type, Any, str], int] = {}
    result = []
    for value in values:
        try:
            token = (value.__class__, value, str(value))
            result.append(seen[token] if token in seen else seen.setdefault(token, coerce(value)))
        except TypeError:  # unhashable (a list or dict label): no class, coerced as it is
            result.append(coerce(value))
    return np.asarray(result, dtype=np.int64)


def coerce_numbers(values: Iterable[Any]) -> np.ndarray:
    """Read JSON values as floats: NaN where missing, +inf where not a finite number (a flag, never scored)."""
    result = []
    for value in values:
        if _is_missing(value):
            result.append(math.nan)
            continue
        try:
            number = math.inf if isinstance(value, bool | np.bool_) else float(value)
        except (TypeError, ValueError):
            number = math.inf
        result.append(number if math.isfinite(number) else math.inf)
    return np.asarray(result, dtype=float)


def worst_status(statuses: Iterable[str]) -> str:
    """Return the worst of ``ok`` < ``warn`` < ``alert`` (``ok`` for none)."""
    return max(statuses, key=STATUSES.index, default="ok")


def _classification_metrics(y: np.ndarray, p: np.ndarray, proba: np.ndarray | None, k: int) -> dict[str, float]:
    if not len(y):
        return {}
    result = {"accuracy": float(skm.accuracy_score(y, p))}
    if k == 2:
        # packaging scores with zero_division=0; on a small window a metric with an empty
        # denominator is undefined, and a reported 0 would read as a collapse, so leave it out
        args = {"average": "binary", "pos_label": 1, "zero_division": 0}
        positives, predicted_positives = int((y == 1).sum()), int((p == 1).sum())
        if predicted_positives:
            result["precision"] = float(skm.precision_score(y, p, **args))
        if positives:
            result["recall"] = float(skm.recall_score(y, p, **args))
        if positives or predicted_positives:
            result["f1"] = float(skm.f1_score(y, p, **args))
    else:
        args = {"average": "macro", "zero_division": 0}
        result["precision"] = float(skm.precision_score(y, p, **args))
        result["recall"] = float(skm.recall_score(y, p, **args))
        result["f1"] = float(skm.f1_score(y, p, **args))
    if proba is not None:
        scored = np.isfinite(proba).all(axis=1)
        if len(np.unique(y[scored])) == k:  # ROC AUC needs every class among the labels
            y, proba = y[scored], proba[scored]
            if k == 2:
                result["roc_auc"] = float(skm.roc_auc_score(y == 1, proba[:, 1]))
            else:
                # rounding on the wire can break "rows sum to 1", which scikit-learn checks
                proba = proba / proba.sum(axis=1, keepdims=True)
                result["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=list(range(k))))
    return result


def _regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if not len(y):
        return {}
    result = {"rmse": float(np.sqrt(skm.mean_squared_error(y, p))), "mae": float(skm.mean_absolute_error(y, p))}
    if len(y) >= 2 and np.ptp(y) > 0:  # R² is undefined for fewer than two or constant labels
        result["r2"] = float(skm.r2_score(y, p))
    return result


def _check(metric: str, live: float, reference: float, t: PerformanceThresholds) -> dict[str, Any]:
    if metric in ERROR_METRICS:
        warn_at, alert_at = reference * (1 + t.warn_increase), reference * (1 + t.alert_increase)
        tolerance = TOLERANCE * max(1.0, abs(reference))
        status = "alert" if live > alert_at + tolerance else "warn" if live > warn_at + tolerance else "ok"
        direction = "above"
    else:
        warn_at, alert_at = reference - t.warn_drop, reference - t.alert_drop
        status = "alert" if live < alert_at - TOLERANCE else "warn" if live < warn_at - TOLERANCE else "ok"
        direction = "below"
    return {"metric": metric, "status": status, "live": live, "reference": reference, "delta": live - reference,
            "direction": direction, "warn_at": warn_at, "alert_at": alert_at}


def _holdout(reference_metrics: dict | None) -> dict[str, float]:
    """Accept ``manifest["metrics"]["holdout"]`` or the whole ``manifest["metrics"]``; keep the numbers."""
    source = reference_metrics or {}
    if isinstance(source.get("holdout"), dict):
        source = source["holdout"]
    return {k: float(v) for k, v in source.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)}


def _probability_matrix(probabilities: Any, n: int, k: int) -> np.ndarray | None:
    """Rows of class probabilities as floats; a NaN row where a prediction was made without them."""
    if probabilities is None or len(probabilities) != n:
        return None
    if isinstance(probabilities, np.ndarray) and probabilities.shape == (n, k) and probabilities.dtype.kind in "biuf":
        return probabilities.astype(float)  # a stored matrix: every row present, as the loop below reads it
    matrix = np.full((n, k), np.nan)
    for i, row in enumerate(probabilities):
        if row is None or np.size(row) != k:
            continue
        try:
            matrix[i] = np.asarray(row, dtype=float)
        except (TypeError, ValueError):
            continue
    return matrix


def _classes_seen(predictions: Iterable[Any], labels: Iterable[Any]) -> list:
    seen = {v.item() if isinstance(v, np.generic) else v for v in [*predictions, *labels] if not _is_missing(v)}
    return sorted(seen, key=str)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _class_key(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool | np.bool_):
        return "bool", bool(value)
    if isinstance(value, numbers.Real):
        return "number", float(value)
    return "text", str(value)


def _value_keys(value: Any) -> Iterator[tuple[str, Any]]:
    """Every class key a JSON value may stand for, the most literal reading first."""
    if isinstance(value, bool | np.bool_):
        yield "bool", bool(value)
    elif isinstance(value, numbers.Real):
        yield "number", float(value)
        yield "text", str(value)
        if float(value).is_integer():
            yield "text", str(int(value))
    else:
        text = str(value)
        yield "text", text
        try:
            yield "number", float(text)
        except ValueError:
            pass
        if text.strip().lower() in ("true", "false"):
            yield "bool", text.strip().lower() == "true"
