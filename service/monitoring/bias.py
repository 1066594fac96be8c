"""Bias: how predictions and their quality differ between groups of a sensitive feature.

For every feature the manifest flags ``"sensitive": true`` the window is split into groups:

* category, string and bool features: one group per value;
* numeric features (int/float): the window's quartile bins (``[q0, q25)``, ``[q25, q50)``,
  ``[q50, q75)``, ``[q75, q100]``, tied edges merged), or one group per value when the window
  holds at most ``VALUE_GROUPS_MAX`` distinct values (a 0/1-coded attribute stays two groups);
* missing values form a ``MISSING_GROUP`` group that is shown but never enters a gap.

Per group: the row count and the prediction rate (binary: share predicted ``classes[1]``;
multiclass: share per class; regression: mean prediction) and, where feedback exists,
accuracy and true positive rate (recall of ``classes[1]``; per class for multiclass; MAE for
regression). Gaps (max - min across groups with at least ``min_group`` rows, or ``min_group``
positive labels for the true positive rate) are the demographic parity and equal opportunity
differences. Pure numpy; no Flask, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.monitoring.performance import TOLERANCE, coerce_labels, coerce_numbers, worst_status

MIN_GROUP = 30
VALUE_GROUPS_MAX = 4
QUARTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
NUMERIC_TYPES = ("int", "float")
MISSING_GROUP = "(missing)"


@dataclass(frozen=True)
class BiasThresholds:
    """When a gap between groups counts as a problem (a gap exactly at a threshold does not)."""

    #: a parity or opportunity difference above this warns (absolute, in rate units)
    warn: float = 0.1
    #: ... and above this alerts
    alert: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.warn <= self.alert:
            raise ValueError("thresholds must be non-negative with warn <= alert")


DEFAULT_THRESHOLDS = BiasThresholds()


def bias_report(features: list[dict], columns: dict[str, np.ndarray], predictions: np.ndarray, labels: np.ndarray | None,
                task: str, classes: list | None, min_group: int = MIN_GROUP,
                thresholds: BiasThresholds = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Compare prediction rates and performance across the groups of every sensitive feature.

    For regression the parity gap is in the target's units; its status is judged on the gap
    divided by the window's prediction standard deviation (``standardized_parity_difference``).
    """
    sensitive = [f for f in features if f.get("sensitive")]
    if not sensitive:
        return {"status": "ok", "features": {}}
    n = len(predictions)
    if task == "regression":
        predicted, truth = coerce_numbers(predictions), coerce_numbers(np.full(n, None) if labels is None else labels)
        classes = None
    else:
        classes = list(classes) if classes is not None else sorted({_plain(v) for v in predictions}, key=str)
        predicted = coerce_labels(predictions, classes)
        truth = np.full(n, -1) if labels is None else coerce_labels(labels, classes)
    report = {f["name"]: _feature_report(f, columns.get(f["name"]), predicted, truth, classes, min_group, thresholds)
              for f in sensitive}
    return {"status": worst_status(r["status"] for r in report.values()), "features": report}


def _feature_report(feature: dict, column: np.ndarray | None, predicted: np.ndarray, truth: np.ndarray,
                    classes: list | None, min_group: int, t: BiasThresholds) -> dict[str, Any]:
    empty = {"grouping": None, "groups": {}, "excluded_groups": [], "demographic_parity_difference": None,
             "equal_opportunity_difference": None, "status": "ok"}
    if classes is None:
        empty["standardized_parity_difference"] = None
    if column is None or len(column) != len(predicted):
        return empty
    grouping, keys, index = group_rows(column, feature.get("type"))
    groups = {key: _group_stats(predicted[index == g], truth[index == g], classes) for g, key in enumerate(keys)}
    if (index == -1).any():
        groups[MISSING_GROUP] = _group_stats(predicted[index == -1], truth[index == -1], classes)
    eligible = [k for k in keys if groups[k]["count"] >= min_group]
    result = {**empty, "grouping": grouping, "groups": groups, "excluded_groups": [k for k in groups if k not in eligible]}
    if classes is None:
        _regression_gaps(result, eligible, predicted, t)
    elif len(classes) == 2:
        rates = {k: groups[k]["positive_rate"] for k in eligible}
        result["demographic_parity_difference"] = _gap(rates)
        tprs = {k: v["true_positive_rate"] for k, v in groups.items()
                if k != MISSING_GROUP and v.get("positives", 0) >= min_group}
        result["equal_opportunity_difference"] = _gap(tprs)
    else:
        _multiclass_gaps(result, eligible, classes, min_group)
    gaps = [result["demographic_parity_difference"] if classes is not None else result["standardized_parity_difference"],
            result["equal_opportunity_difference"]]
    result["status"] = worst_status(_status(g, t) for g in gaps)
    return result


def group_rows(column: np.ndarray, kind: str | None) -> tuple[str, list[str], np.ndarray]:
    """Split rows into groups: return the grouping used, the group keys and each row's group (-1: missing)."""
    if kind in NUMERIC_TYPES:
        values = coerce_numbers(column)
        values[np.isinf(values)] = np.nan  # not a number: as good as missing for grouping
        present = values[np.isfinite(values)]
        distinct = np.unique(present)
        if len(distinct) > VALUE_GROUPS_MAX:
            edges = np.unique(np.quantile(present, QUARTILES))
            index = np.searchsorted(edges[1:-1], values, side="right")
            keys = [f"[{_number(lo)}, {_number(hi)}{']' if i == len(edges) - 2 else ')'}"
                    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
            return "quartile", keys, np.where(np.isfinite(values), index, -1)
        index = np.searchsorted(distinct, values)
        return "value", [_number(v) for v in distinct], np.where(np.isfinite(values), index, -1)
    text = [None if _missing(v) else _key(v) for v in column]
    keys = sorted({k for k in text if k is not None})
    position = {k: i for i, k in enumerate(keys)}
    return "category", keys, np.asarray([-1 if k is None else position[k] for k in text], dtype=np.int64)


def _group_stats(predicted: np.ndarray, truth: np.ndarray, classes: list | None) -> dict[str, Any]:
    stats: dict[str, Any] = {"count": len(predicted)}
    if classes is None:
        known = np.isfinite(predicted)
        stats["mean_prediction"] = float(predicted[known].mean()) if known.any() else None
        scored = known & np.isfinite(truth)
        stats["labelled"] = int(scored.sum())
        stats["mae"] = float(np.abs(truth[scored] - predicted[scored]).mean()) if scored.any() else None
        return stats
    known = predicted >= 0
    shares = [float((predicted[known] == c).mean()) if known.any() else None for c in range(len(classes))]
    scored = known & (truth >= 0)
    y, p = truth[scored], predicted[scored]
    stats["labelled"] = len(y)
    stats["accuracy"] = float((y == p).mean()) if len(y) else None
    recalls = [float((p[y == c] == c).mean()) if (y == c).any() else None for c in range(len(classes))]
    if len(classes) == 2:
        stats["positive_rate"] = shares[1]
        stats["positives"] = int((y == 1).sum())
        stats["true_positive_rate"] = recalls[1]
    else:
        stats["prediction_rates"] = {_key(c): s for c, s in zip(classes, shares, strict=True)}
        stats["label_counts"] = {_key(c): int((y == i).sum()) for i, c in enumerate(classes)}
        stats["true_positive_rates"] = {_key(c): r for c, r in zip(classes, recalls, strict=True)}
    return stats


def _regression_gaps(result: dict[str, Any], eligible: list[str], predicted: np.ndarray, t: BiasThresholds) -> None:
    gap = _gap({k: result["groups"][k]["mean_prediction"] for k in eligible})
    known = predicted[np.isfinite(predicted)]
    spread = float(known.std()) if len(known) > 1 else 0.0
    result["demographic_parity_difference"] = gap
    # a gap in target units says nothing against rate thresholds; in prediction SDs it does
    result["standardized_parity_difference"] = None if gap is None else (gap / spread if spread > 0 else 0.0)


def _multiclass_gaps(result: dict[str, Any], eligible: list[str], classes: list, min_group: int) -> None:
    """Take the widest per-class gap: the class whose rate (or recall) differs most between groups."""
    groups = result["groups"]
    parity, opportunity = {}, {}
    for cls in map(_key, classes):
        parity[cls] = _gap({k: groups[k]["prediction_rates"][cls] for k in eligible})
        opportunity[cls] = _gap({k: g["true_positive_rates"][cls] for k, g in groups.items()
                                 if k != MISSING_GROUP and g["label_counts"][cls] >= min_group})
    result["demographic_parity_by_class"], result["equal_opportunity_by_class"] = parity, opportunity
    result["demographic_parity_difference"] = max((g for g in parity.values() if g is not None), default=None)
    result["equal_opportunity_difference"] = max((g for g in opportunity.values() if g is not None), default=None)


def _gap(values: dict[str, float | None]) -> float | None:
    """Return max - min over the groups that have a value; None with fewer than two."""
    present = [v for v in values.values() if v is not None]
    return float(max(present) - min(present)) if len(present) >= 2 else None


def _status(gap: float | None, t: BiasThresholds) -> str:
    if gap is None:
        return "ok"
    return "alert" if gap > t.alert + TOLERANCE else "warn" if gap > t.warn + TOLERANCE else "ok"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _key(value: Any) -> str:
    """JSON object keys are strings; bools and numbers keep a readable form."""
    value = _plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number(value) if isinstance(value, float) else str(value)


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.6g}"
