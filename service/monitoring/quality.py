"""Data quality: are the inputs complete and inside what the model was trained on?

Three rates per feature, each against the reference profile:

* ``missing_rate``: missing values (None, NaN) among all rows, judged by how far it
  exceeds the reference ``missing_rate`` (a feature that was 10 % missing in training is
  not a problem at 12 %);
* ``out_of_range_rate`` (numeric): non-missing values outside the reference [min, max];
* ``unseen_rate`` (categorical): non-missing values the reference did not list among its
  categories, judged by how far it exceeds the reference ``other_rate`` (the profile keeps
  the most frequent categories only, so rare known values land there too).

Default thresholds (``QualityThresholds``) are 5 points to warn and 20 to alert for each:
5 % of a window broken in one way is already worth a look, a fifth of it means the model
is mostly guessing for those rows. They are far above the noise of unchanged traffic: a
fresh value leaves a training range of n values with probability about 2 / n (under 1 %
for our demo models), and a missing rate estimated on 100 rows has a standard error under
5 points. Fewer than ``min_samples`` rows give ``insufficient`` statuses (the counts are
still reported), so one odd request never raises an alert.

``request_quality`` checks one request's batch; ``window_quality`` a window of the
prediction log. A personal-data (``pii``) feature's profile keeps no range and keys its
categories by salted hash: its values are hashed with that salt before they are looked up, it
gets no out-of-range check, and its entry never shows a range. Pure numpy; no Flask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.models import pii
from service.models.artifacts import NUMERIC_TYPES
from service.monitoring.drift import (
    INSUFFICIENT,
    canonical_key,
    category_key,
    hashed_keys,
    keyed,
    numeric_values,
    worst,
)


@dataclass(frozen=True)
class QualityThresholds:
    """Rates (as fractions, in excess of the reference where it has one) that warn or alert."""

    missing_warn: float = 0.05
    missing_alert: float = 0.20
    out_of_range_warn: float = 0.05
    out_of_range_alert: float = 0.20
    unseen_warn: float = 0.05
    unseen_alert: float = 0.20
    #: Fewer rows than this and statuses are ``insufficient``.
    min_samples: int = 100


DEFAULT = QualityThresholds()


def request_quality(features: list[dict[str, Any]], columns: dict[str, np.ndarray],
                    reference_profile: dict[str, Any] | None = None,
                    thresholds: QualityThresholds = DEFAULT) -> dict[str, Any]:
    """Check one request's batch; without a profile, ranges and categories come from the schema.

    The schema's bounds are what validation enforces, so only the profile's training range
    finds values that pass validation yet lie where the model never saw data.
    """
    if reference_profile is None:
        reference_profile = {"features": {f["name"]: _schema_reference(f) for f in features}}
    return window_quality(reference_profile, features, columns, thresholds)


def request_counts(features: list[dict[str, Any]], reference_profile: dict[str, Any] | None, *,
                   columns: dict[str, np.ndarray] | None = None, block: np.ndarray | None = None) -> dict[str, int]:
    """``request_quality(features, columns, reference_profile)["counts"]``, without the report.

    The data-quality metric needs only these totals, for every answer, so what depends on the
    model alone (bounds, which features are numeric, the schema's stand-in profile) is worked
    out once per feature list and profile. ``block`` (``ValidatedBatch.block``: features x rows,
    float64, rows in feature order) is counted as it is; without it ``columns`` take the
    general path.
    """
    plan = _count_plan(features, reference_profile)
    if block is None or block.ndim != 2 or block.shape[0] != len(features):
        return request_quality(features, columns or {}, plan.profile)["counts"]
    rows = block.shape[1]
    numeric = block if plan.all_numeric else block[plan.numeric]
    with np.errstate(invalid="ignore"):
        missing = int(np.isnan(numeric).sum())
        outside = int(((numeric < plan.low) | (numeric > plan.high)).sum())  # NaN is never outside
    counts = {"missing": missing, "out_of_range": outside, "unseen": 0}
    for index, feature, entry in plan.others:
        report = feature_quality(entry, feature, block[index], rows)
        for key in counts:
            counts[key] += report.get(key, 0)
    return counts


@dataclass(frozen=True)
class _CountPlan:
    """What ``request_counts`` needs of one feature list and profile, worked out once."""

    features: list[dict[str, Any]]
    given: dict[str, Any] | None  # the profile it was made for (None: the schema's)
    profile: dict[str, Any]
    numeric: np.ndarray  # block rows of the numeric features
    all_numeric: bool
    low: np.ndarray  # (numeric features, 1); NaN where there is no bound
    high: np.ndarray
    others: tuple[tuple[int, dict[str, Any], dict[str, Any]], ...]  # (block row, feature, profile entry)


_PLANS: dict[tuple[int, int], _CountPlan] = {}
_MAX_PLANS = 256  # model versions a worker serves at once are far fewer; past it the cache starts over


def _count_plan(features: list[dict[str, Any]], reference_profile: dict[str, Any] | None) -> _CountPlan:
    key = (id(features), id(reference_profile))
    plan = _PLANS.get(key)
    if plan is not None and plan.features is features and plan.given is reference_profile:
        return plan
    profile = reference_profile if reference_profile is not None else \
        {"features": {f["name"]: _schema_reference(f) for f in features}}
    entries = profile.get("features", {})
    numeric, low, high, others = [], [], [], []
    for index, feature in enumerate(features):
        entry = entries.get(feature["name"], {})
        if _is_numeric(entry, feature):
            numeric.append(index)
            low.append(np.nan if entry.get("min") is None else entry["min"])
            high.append(np.nan if entry.get("max") is None else entry["max"])
        else:
            others.append((index, feature, entry))
    plan = _CountPlan(features, reference_profile, profile, np.array(numeric, dtype=np.intp),
                      len(numeric) == len(features), np.array(low, dtype=np.float64)[:, None],
                      np.array(high, dtype=np.float64)[:, None], tuple(others))
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def window_quality(reference_profile: dict[str, Any], features: list[dict[str, Any]], columns: dict[str, np.ndarray],
                   thresholds: QualityThresholds = DEFAULT) -> dict[str, Any]:
    """Measure missing, out-of-range and unseen values of a window against the reference."""
    profiles = reference_profile.get("features", {})
    n = max((len(v) for v in columns.values()), default=0)
    together = _numeric_together(profiles, features, columns, thresholds)
    report = {f["name"]: together[f["name"]] if f["name"] in together
              else feature_quality(profiles.get(f["name"], {}), f, columns.get(f["name"]), n, thresholds)
              for f in features}
    totals = {key: sum(r.get(key, 0) for r in report.values()) for key in ("missing", "out_of_range", "unseen")}
    return {
        "status": worst([r["status"] for r in report.values()]) if n >= thresholds.min_samples else INSUFFICIENT,
        "n": n,
        "counts": totals,
        "thresholds": asdict(thresholds),
        "features": report,
    }


def feature_quality(entry: dict[str, Any], feature: dict[str, Any], values: np.ndarray | None, n: int,
                    thresholds: QualityThresholds = DEFAULT) -> dict[str, Any]:
    """Count one column's missing, out-of-range or unseen values; an absent column is all missing."""
    values = np.full(n, None, dtype=object) if values is None else np.asarray(values)
    rows = len(values)
    missing = rows - len(numeric_values(values)) if _is_numeric(entry, feature) else _missing_count(values)
    reference_missing = float(entry.get("missing_rate", 0.0))
    result: dict[str, Any] = {
        "kind": "numeric" if _is_numeric(entry, feature) else "categorical",
        "n": rows,
        "missing": missing,
        "missing_rate": missing / rows if rows else 0.0,
        "reference_missing_rate": reference_missing,
    }
    statuses = [_level(result["missing_rate"] - reference_missing, thresholds.missing_warn, thresholds.missing_alert)]
    if result["kind"] == "numeric":
        present = numeric_values(values)
        low, high = entry.get("min"), entry.get("max")
        outside = np.zeros(len(present), dtype=bool)
        if low is not None:
            outside |= present < low
        if high is not None:
            outside |= present > high
        _add_range(result, statuses, feature, low, high, int(outside.sum()), len(present), thresholds)
    elif entry.get("categories") is not None:
        known = {canonical_key(k) for k in entry["categories"]}
        keys = hashed_keys(values, entry["salt"]) if entry.get("salt") else [k for k in keyed(values) if k is not None]
        unseen = sum(k not in known for k in keys)
        reference_other = float(entry.get("other_rate", 0.0))
        result.update(unseen=unseen, unseen_rate=_rate(unseen, len(keys)), reference_unseen_rate=reference_other)
        statuses.append(_level(result["unseen_rate"] - reference_other, thresholds.unseen_warn, thresholds.unseen_alert))
        result["unseen_status"] = statuses[-1]
    return _finish(result, statuses, rows, thresholds)


def _add_range(result: dict[str, Any], statuses: list[str], feature: dict[str, Any], low: Any, high: Any,
               outside: int, present: int, thresholds: QualityThresholds) -> None:
    result.update(out_of_range=outside, out_of_range_rate=_rate(outside, present))
    if not feature.get("pii"):  # a range from a manifest packaged before hashing may be somebody's value
        result["range"] = [low, high]
    statuses.append(_level(result["out_of_range_rate"], thresholds.out_of_range_warn, thresholds.out_of_range_alert))
    result["out_of_range_status"] = statuses[-1]


def _finish(result: dict[str, Any], statuses: list[str], rows: int, thresholds: QualityThresholds) -> dict[str, Any]:
    result["missing_status"] = statuses[0]
    if rows < thresholds.min_samples:
        for key in ("missing_status", "out_of_range_status", "unseen_status"):
            if key in result:
                result[key] = INSUFFICIENT
        result["status"] = INSUFFICIENT
    else:
        result["status"] = worst(statuses)
    return result


def _numeric_together(profiles: dict[str, Any], features: list[dict[str, Any]], columns: dict[str, np.ndarray],
                      thresholds: QualityThresholds) -> dict[str, dict[str, Any]]:
    """``feature_quality`` of every numeric feature whose column is a numeric array, with a few numpy calls in all.

    The features become the rows of one block: missing and out-of-range values are counted for
    all of them at once (one request's batch pays this on every answer, so per-feature numpy calls
    added up to more than the prediction). Others (object columns, absent ones, columns of
    another length) are left to ``feature_quality``, which gives these the same report.
    """
    chosen = []
    for feature in features:
        entry = profiles.get(feature["name"], {})
        values = columns.get(feature["name"])
        if (_is_numeric(entry, feature) and type(values) is np.ndarray and values.ndim == 1
                and values.dtype.kind in "biuf"):
            chosen.append((feature, entry, values))
    if not chosen or len({len(values) for _, _, values in chosen}) != 1:
        return {}
    block = np.vstack([values for _, _, values in chosen]).astype(np.float64, copy=False)
    rows = block.shape[1]
    bounds = [(entry.get("min"), entry.get("max")) for _, entry, _ in chosen]
    low = np.array([np.nan if lo is None else lo for lo, _ in bounds], dtype=np.float64)[:, None]
    high = np.array([np.nan if hi is None else hi for _, hi in bounds], dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        missing = np.isnan(block).sum(axis=1).tolist()
        outside = ((block < low) | (block > high)).sum(axis=1).tolist()  # NaN (missing, or no bound) is never outside
    report = {}
    for (feature, entry, _), absent, out, (lo, hi) in zip(chosen, missing, outside, bounds, strict=True):
        reference_missing = float(entry.get("missing_rate", 0.0))
        result: dict[str, Any] = {"kind": "numeric", "n": rows, "missing": absent,
                                  "missing_rate": absent / rows if rows else 0.0,
                                  "reference_missing_rate": reference_missing}
        statuses = [_level(result["missing_rate"] - reference_missing, thresholds.missing_warn,
                           thresholds.missing_alert)]
        _add_range(result, statuses, feature, lo, hi, out, rows - absent, thresholds)
        report[feature["name"]] = _finish(result, statuses, rows, thresholds)
    return report


def _schema_reference(feature: dict[str, Any]) -> dict[str, Any]:
    """Stand in for a profile entry with the schema's bounds and categories (none missing)."""
    if feature.get("type") in NUMERIC_TYPES:
        return {"kind": "numeric", "min": feature.get("min"), "max": feature.get("max"), "missing_rate": 0.0}
    categories = feature.get("categories")
    entry: dict[str, Any] = {"kind": "categorical", "missing_rate": 0.0}
    hashed = feature.get(pii.HASHED)
    if isinstance(hashed, dict) and hashed.get("digests"):
        digests = hashed["digests"]
        entry.update(salt=hashed["salt"], categories={pii.KEY_PREFIX + d: 1.0 / len(digests) for d in digests})
    elif categories is not None:
        entry["categories"] = {category_key(c): 1.0 / len(categories) for c in categories}
    return entry


def _is_numeric(entry: dict[str, Any], feature: dict[str, Any]) -> bool:
    if entry.get("kind") in ("numeric", "categorical"):
        return entry["kind"] == "numeric"
    return feature.get("type") in NUMERIC_TYPES


def _missing_count(values: np.ndarray) -> int:
    return sum(k is None for k in keyed(values))


def _rate(count: int, total: int) -> float:
    return float(count) / total if total else 0.0


def _level(excess: float, warn: float, alert: float) -> str:
    excess += 1e-12  # 0.15 - 0.10 is 0.04999...; a rate exactly at a threshold reaches it
    return "alert" if excess >= alert else "warn" if excess >= warn else "ok"
