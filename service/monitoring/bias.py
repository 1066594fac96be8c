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
differences.

**Status: evidence and size, like drift.** A gap alone is mostly noise in small groups: two
groups of 30 rows drawn from one population differ in positive rate by about 0.13 (one
standard deviation) by chance, so "gap above 0.2" alone alerts on nothing every few windows.
Every gap therefore also gets a test of "the groups differ" (null: one rate for every group):

* demographic parity (classification): the groups x {predicted positive, not} table; equal
  opportunity: the same table over the rows whose label is the positive class (groups x {true
  positive, false negative}). A table is tested with Pearson's chi-square test of independence
  (``scipy.stats.chi2_contingency``, no continuity correction) when every expected count is at
  least ``MIN_EXPECTED`` (5); otherwise with Fisher's exact test (``scipy.stats.fisher_exact``:
  exact for a 2x2 table, and for more groups a Monte Carlo estimate of the same conditional
  p-value from ``random_table`` draws with a fixed seed, so a report is reproducible, and with
  enough draws to resolve p-values well below the cut-off). A table with one outcome only (every
  group predicts negative) is the only table its margins allow: p = 1.
* multiclass: each class is tested on its own groups x {class, not} table (the same table as the
  class's gap) and its p-value multiplied by the number of classes tested (Bonferroni), so the
  feature's family of classes counts as one test. A class's status needs *its own* gap and *its
  own* corrected p-value; ``parity_pvalue`` / ``opportunity_pvalue`` are the smallest corrected
  p-values and ``*_pvalue_by_class`` lists them all.
* regression: a Kruskal-Wallis test (``scipy.stats.kruskal``) of the predictions across groups
  for the parity gap (p = 1 when every prediction is the same); the gap is judged as
  ``standardized_parity_difference``.

A gap is *significant* when its p-value is below ``alpha / tests``, ``tests`` being the number
of gaps tested in the whole report (Bonferroni; every sensitive feature has up to two). Then:

* alert: significant and the gap above ``thresholds.alert``;
* warn: significant and the gap above ``thresholds.warn``;
* ok: anything else (no evidence, however wide the gap; or a real but immaterial gap).

So a window without bias alerts (or warns) with probability at most about ``alpha`` whatever
the group sizes, and a material gap alerts once the groups are large enough to show it. Pure
numpy/scipy; no Flask, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from service.models.artifacts import NUMERIC_TYPES
from service.monitoring.performance import TOLERANCE, coerce_labels, coerce_numbers, worst_status

MIN_GROUP = 30
VALUE_GROUPS_MAX = 4
QUARTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
MISSING_GROUP = "(missing)"
#: below this expected count in any cell a table is tested exactly (Fisher), not by chi-square
MIN_EXPECTED = 5.0
#: Monte Carlo Fisher tests draw at least this many tables, and enough for this many expected
#: exceedances at the report's p-value cut-off
MONTE_CARLO_MIN = 9999
MONTE_CARLO_MAX = 10_000
MONTE_CARLO_AT_CUTOFF = 50
MONTE_CARLO_SEED = 0
CHI_SQUARE, FISHER, FISHER_MONTE_CARLO, KRUSKAL = "chi2_contingency", "fisher_exact", "fisher_exact_monte_carlo", "kruskal"


@dataclass(frozen=True)
class BiasThresholds:
    """When a gap between groups counts as a problem (a gap exactly at a threshold does not)."""

    #: a significant parity or opportunity difference above this warns (absolute, in rate units)
    warn: float = 0.1
    #: ... and above this alerts
    alert: float = 0.2
    #: family-wise significance: each gap's test must have p < alpha / (gaps tested in the report)
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.warn <= self.alert:
            raise ValueError("thresholds must be non-negative with warn <= alert")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be between 0 and 1")


DEFAULT_THRESHOLDS = BiasThresholds()


@dataclass
class _Gap:
    """One reported gap waiting for its test: per part (a class, or None), the gap and the test input."""

    name: str  # "parity" or "opportunity"
    size_field: str  # the report field whose value is judged against the thresholds
    parts: list[tuple[str | None, float, Any]] = field(default_factory=list)


def bias_report(features: list[dict], columns: dict[str, np.ndarray], predictions: np.ndarray, labels: np.ndarray | None,
                task: str, classes: list | None, min_group: int = MIN_GROUP,
                thresholds: BiasThresholds = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Compare prediction rates and performance across the groups of every sensitive feature.

    For regression the parity gap is in the target's units; its status is judged on the gap
    divided by the window's prediction standard deviation (``standardized_parity_difference``).
    """
    sensitive = [f for f in features if f.get("sensitive")]
    if not sensitive:
        return {"status": "ok", "thresholds": _cutoff(thresholds, 0), "features": {}}
    n = len(predictions)
    if task == "regression":
        predicted, truth = coerce_numbers(predictions), coerce_numbers(np.full(n, None) if labels is None else labels)
        classes = None
    else:
        classes = list(classes) if classes is not None else sorted({_plain(v) for v in predictions}, key=str)
        predicted = coerce_labels(predictions, classes)
        truth = np.full(n, -1) if labels is None else coerce_labels(labels, classes)
    report, pending = {}, []
    for f in sensitive:
        report[f["name"]], gaps = _feature_report(f, columns.get(f["name"]), predicted, truth, classes, min_group)
        pending += [(report[f["name"]], gap) for gap in gaps]
    cutoff = _cutoff(thresholds, len(pending))
    for result, gap in pending:
        _judge(result, gap, cutoff["p_value"], thresholds)
    return {"status": worst_status(r["status"] for r in report.values()), "thresholds": cutoff, "features": report}


def _cutoff(t: BiasThresholds, tests: int) -> dict[str, Any]:
    return {"warn": t.warn, "alert": t.alert, "alpha": t.alpha, "tests": tests, "p_value": t.alpha / max(tests, 1)}


def _feature_report(feature: dict, column: np.ndarray | None, predicted: np.ndarray, truth: np.ndarray,
                    classes: list | None, min_group: int) -> tuple[dict[str, Any], list[_Gap]]:
    """Return the feature's groups and gaps (status ``ok`` until judged) and the gaps to test."""
    empty = {"grouping": None, "groups": {}, "excluded_groups": [], "demographic_parity_difference": None,
             "equal_opportunity_difference": None, "parity_pvalue": None, "opportunity_pvalue": None,
             "test": {"parity": None, "opportunity": None}, "status": "ok"}
    if classes is None:
        empty["standardized_parity_difference"] = None
    if column is None or len(column) != len(predicted):
        return empty, []
    grouping, keys, index = group_rows(column, feature.get("type"))
    groups = {key: _group_stats(predicted[index == g], truth[index == g], classes) for g, key in enumerate(keys)}
    if (index == -1).any():
        groups[MISSING_GROUP] = _group_stats(predicted[index == -1], truth[index == -1], classes)
    eligible = [k for k in keys if groups[k]["count"] >= min_group]
    result = {**empty, "grouping": grouping, "groups": groups, "excluded_groups": [k for k in groups if k not in eligible]}
    rows = {k: index == g for g, k in enumerate(keys)}  # each group's rows
    if classes is None:
        return result, _regression_gaps(result, eligible, predicted, rows)
    per_class = range(1, 2) if len(classes) == 2 else range(len(classes))
    count_key = "positives" if len(classes) == 2 else "label_counts"
    parity, opportunity = _Gap("parity", "demographic_parity_difference"), _Gap("opportunity", "equal_opportunity_difference")
    known = predicted >= 0
    for c in per_class:
        cls = None if len(classes) == 2 else _key(classes[c])
        labelled = [k for k in keys if (groups[k][count_key] if cls is None else groups[k][count_key][cls]) >= min_group]
        rate = _gap({k: _rate(groups[k], "positive_rate", "prediction_rates", cls) for k in eligible})
        recall = _gap({k: _rate(groups[k], "true_positive_rate", "true_positive_rates", cls) for k in labelled})
        if rate is not None:
            parity.parts.append((cls, rate, _table(predicted == c, [rows[k] & known for k in eligible])))
        if recall is not None:
            opportunity.parts.append((cls, recall, _table(predicted == c, [rows[k] & known & (truth == c) for k in labelled])))
        if cls is not None:
            result.setdefault("demographic_parity_by_class", {})[cls] = rate
            result.setdefault("equal_opportunity_by_class", {})[cls] = recall
    # the widest gap (multiclass: the class whose rate or recall differs most between groups)
    result["demographic_parity_difference"] = max((g for _, g, _ in parity.parts), default=None)
    result["equal_opportunity_difference"] = max((g for _, g, _ in opportunity.parts), default=None)
    if len(classes) > 2:
        result["parity_pvalue_by_class"] = {k: None for k in result["demographic_parity_by_class"]}
        result["opportunity_pvalue_by_class"] = {k: None for k in result["equal_opportunity_by_class"]}
    return result, [g for g in (parity, opportunity) if g.parts]


def _rate(group: dict[str, Any], binary: str, multiclass: str, cls: str | None) -> float | None:
    return group[binary] if cls is None else group[multiclass][cls]


def _table(outcome: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    """Return the groups x {outcome, not} counts, without groups that have no rows."""
    table = np.array([[int((outcome & r).sum()), int((~outcome & r).sum())] for r in rows], dtype=np.int64)
    return table[table.sum(axis=1) > 0]


def _regression_gaps(result: dict[str, Any], eligible: list[str], predicted: np.ndarray,
                     rows: dict[str, np.ndarray]) -> list[_Gap]:
    gap = _gap({k: result["groups"][k]["mean_prediction"] for k in eligible})
    finite = np.isfinite(predicted)
    known = predicted[finite]
    spread = float(known.std()) if len(known) > 1 else 0.0
    result["demographic_parity_difference"] = gap
    # a gap in target units says nothing against rate thresholds; in prediction SDs it does
    result["standardized_parity_difference"] = None if gap is None else (gap / spread if spread > 0 else 0.0)
    if gap is None:
        return []
    samples = [predicted[rows[k] & finite] for k in eligible]
    return [_Gap("parity", "standardized_parity_difference",
                 [(None, result["standardized_parity_difference"], [s for s in samples if len(s)])])]


def _judge(result: dict[str, Any], gap: _Gap, cutoff: float, t: BiasThresholds) -> None:
    """Test a gap, record its p-value and test, and raise the feature's status if it is significant and material."""
    k = len(gap.parts)
    names, statuses = [], [result["status"]]
    for cls, size, data in gap.parts:
        pvalue, name = _kruskal(data) if gap.size_field == "standardized_parity_difference" else _independence(data, cutoff / k)
        if cls is not None:  # one class of several: Bonferroni over the classes tested
            pvalue = min(1.0, pvalue * k)
            result[f"{gap.name}_pvalue_by_class"][cls] = pvalue
        current = result[f"{gap.name}_pvalue"]
        result[f"{gap.name}_pvalue"] = pvalue if current is None else min(current, pvalue)
        names.append(name)
        statuses.append(_status(size, pvalue < cutoff, t))
    tests = "/".join(dict.fromkeys(names))
    result["test"] = {**result["test"], gap.name: tests if gap.parts[0][0] is None else f"{tests} per class, Bonferroni x{k}"}
    result["status"] = worst_status(statuses)


def _independence(table: np.ndarray, cutoff: float) -> tuple[float, str]:
    """Test that every row of a groups x 2 table has the same share of the first column."""
    columns = table.sum(axis=0)
    if (columns == 0).any():  # one outcome only: the sole table with these margins
        return 1.0, FISHER
    expected = np.outer(table.sum(axis=1), columns) / table.sum()
    if expected.min() >= MIN_EXPECTED:
        return float(stats.chi2_contingency(table, correction=False).pvalue), CHI_SQUARE
    if table.shape == (2, 2):
        return float(stats.fisher_exact(table).pvalue), FISHER
    # enough draws to resolve the cut-off, but bounded: a report must stay fast on any table
    # (below 1/MONTE_CARLO_MAX a p-value reads as that floor, which only ever under-alerts)
    draws = min(MONTE_CARLO_MAX, max(MONTE_CARLO_MIN, math.ceil(MONTE_CARLO_AT_CUTOFF / cutoff)))
    method = stats.MonteCarloMethod(n_resamples=draws, rng=np.random.default_rng(MONTE_CARLO_SEED))
    return float(stats.fisher_exact(table, method=method).pvalue), FISHER_MONTE_CARLO


def _kruskal(samples: list[np.ndarray]) -> tuple[float, str]:
    values = np.concatenate(samples)
    if len(samples) < 2 or values.min() == values.max():  # every prediction the same: nothing differs
        return 1.0, KRUSKAL
    return float(stats.kruskal(*samples).pvalue), KRUSKAL


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
    stats_: dict[str, Any] = {"count": len(predicted)}
    if classes is None:
        known = np.isfinite(predicted)
        stats_["mean_prediction"] = float(predicted[known].mean()) if known.any() else None
        scored = known & np.isfinite(truth)
        stats_["labelled"] = int(scored.sum())
        stats_["mae"] = float(np.abs(truth[scored] - predicted[scored]).mean()) if scored.any() else None
        return stats_
    known = predicted >= 0
    shares = [float((predicted[known] == c).mean()) if known.any() else None for c in range(len(classes))]
    scored = known & (truth >= 0)
    y, p = truth[scored], predicted[scored]
    stats_["labelled"] = len(y)
    stats_["accuracy"] = float((y == p).mean()) if len(y) else None
    recalls = [float((p[y == c] == c).mean()) if (y == c).any() else None for c in range(len(classes))]
    if len(classes) == 2:
        stats_["positive_rate"] = shares[1]
        stats_["positives"] = int((y == 1).sum())
        stats_["true_positive_rate"] = recalls[1]
    else:
        stats_["prediction_rates"] = {_key(c): s for c, s in zip(classes, shares, strict=True)}
        stats_["label_counts"] = {_key(c): int((y == i).sum()) for i, c in enumerate(classes)}
        stats_["true_positive_rates"] = {_key(c): r for c, r in zip(classes, recalls, strict=True)}
    return stats_


def _gap(values: dict[str, float | None]) -> float | None:
    """Return max - min over the groups that have a value; None with fewer than two."""
    present = [v for v in values.values() if v is not None]
    return float(max(present) - min(present)) if len(present) >= 2 else None


def _status(gap: float, significant: bool, t: BiasThresholds) -> str:
    if not significant:
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
