"""Data drift: does a window of live traffic still look like the reference profile?

Each feature (and the model's output) is compared with its reference in two ways that answer
different questions:

* **PSI** (population stability index) on the reference bins says *how much* the
  distribution moved. Numeric values fall into the profile's ``bin_edges`` with open outer
  bins (below the first edge -> bin 0, above the last -> the last bin, the same rule as
  ``service.models.profile``); categorical values into the profile's categories plus an ``other``
  bucket for anything the reference did not list. Shares are floored at ``PSI_EPSILON``
  (1e-4) before the logarithm, so a bin that is empty on one side adds a large but finite
  term (a 10 % bin that empties adds 0.1 * ln(0.1 / 1e-4) = 0.69).
* **A two-sample test** says whether the move is *more than sampling noise*: Kolmogorov-
  Smirnov against the profile's raw ``sample`` for numeric features, a chi-square test of
  homogeneity (window counts against the reference counts, sparse cells merged) for
  categorical ones. The reference is itself a finite sample, so the test treats it as one;
  a goodness-of-fit test against its shares as if they were exact raises false alarms once
  the window is as large as the training set.

How they combine into a status (see ``DriftThresholds`` for the numbers):

* alert: evidence (p < alpha / tests) of a material change (PSI >= psi_warn, or for a
  numeric feature a KS statistic >= ks_material);
* warn: evidence of an immaterial change (a real but small shift, typical of huge windows);
* ok: no evidence, whatever the PSI.

An alert needs both: the test alone fires on trivial shifts in large windows, PSI alone is
biased upwards in small ones (about (bins - 1) / n for pure noise, so in a window of 100
unchanged rows one of 30 features has a PSI above 0.25 about one time in five). The KS statistic counts
as materiality too because quantile bins can hide a real shift: a feature recorded mostly as
whole numbers (the diabetes ``s4``) can move by half a standard deviation without a value
crossing a bin edge, while its distribution function moves by 0.4. ``alpha`` is family-wise:
a report tests every feature and the prediction, so each test uses ``alpha / tests``
(Bonferroni) and a window of unchanged traffic alerts with probability at most about
``alpha``. When no test can run (no reference sample, too few counts for chi-square) the
status comes from PSI alone. Fewer than ``min_samples`` non-missing values give
``insufficient``, which never raises a report's status.

Missing values are ignored here (data quality counts them).

Personal-data (``pii``) features are profiled without raw values (``service.models.profile``):
numeric ones as shares over rounded bins with no sample, so PSI alone decides; categorical ones
keyed by salted hash, so live values are hashed with the profile's salt before they are counted.
The prediction log never keeps their raw values (``service.monitoring.privacy``: a keyed HMAC
or nothing), so a window from the log has none to compare and such a feature reports
``insufficient`` with that reason. Their entries never carry bin edges or category names.
Pure numpy/scipy; no Flask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from service.models import pii
from service.models.profile import _bin_counts
from service.monitoring import ks

PSI_EPSILON = 1e-4
OTHER = "other"
STATUSES = ("ok", "warn", "alert")
INSUFFICIENT = "insufficient"
PII_REASON = "personal data: the prediction log keeps no raw values of this feature to compare"


@dataclass(frozen=True)
class DriftThresholds:
    """Where drift becomes a warning or an alert."""

    #: PSI of a material shift; 0.1 / 0.25 is the usual credit-scoring rule of thumb
    #: (below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant). ``psi_alert`` only
    #: decides alone when no test can run; otherwise a significant test decides.
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    #: Largest gap between the two distribution functions that is material on its own: a
    #: tenth of the values moved past some point (a normal shifted by 0.25 sd).
    ks_material: float = 0.1
    #: Family-wise significance of the two-sample tests, split over all tests of a report.
    alpha: float = 0.01
    #: Fewer non-missing values than this and a feature is ``insufficient``.
    min_samples: int = 100
    #: Chi-square cells whose expected count is below this are merged (the textbook rule).
    min_expected: float = 5.0


DEFAULT = DriftThresholds()


def drift_report(reference_profile: dict[str, Any], features: list[dict[str, Any]], columns: dict[str, np.ndarray],
                 predictions: np.ndarray, task: str, thresholds: DriftThresholds = DEFAULT) -> dict[str, Any]:
    """Compare every feature and the prediction distribution of a window with the reference."""
    profiles = reference_profile.get("features", {})
    # a personal-data feature with no raw values (a window from the log) runs no test
    silent = {f["name"] for f in features if f.get("pii") and not _has_values(columns.get(f["name"]))}
    tests = len(features) - len(silent) + 1
    # the numeric features' KS tests at once: their p-values are one call, not one per feature
    present = {f["name"]: numeric_values(columns.get(f["name"], np.array([], dtype=float))) for f in features
               if not f.get("pii") and profiles.get(f["name"], {}).get("kind") == "numeric"}
    tested = [name for name, values in present.items() if len(values) and profiles[name].get("sample")]
    found = dict(zip(tested, ks.two_sample([present[name] for name in tested],
                                           [ks.sorted_sample(profiles[name]["sample"]) for name in tested]),
                     strict=True))
    report_features = {}
    for feature in features:
        name = feature["name"]
        values = columns.get(name, np.array([], dtype=object))
        entry = profiles.get(name, {"kind": "empty"})
        if feature.get("pii"):
            report_features[name] = personal_drift(entry, values, thresholds, tests=tests)
        elif name in present:
            report_features[name] = _numeric_drift(entry, present[name], thresholds, tests, found.get(name))
        else:
            report_features[name] = feature_drift(entry, values, thresholds, tests=tests)
    for name, entry in profiles.items():  # personal data a caller left out (no raw values): said, not silent
        if isinstance(entry, dict) and entry.get("pii") and name not in report_features:
            report_features[name] = personal_drift(entry, np.array([], dtype=object), thresholds)
    prediction_entry = reference_profile.get("prediction", {"kind": "empty"})
    if task == "classification" and prediction_entry.get("kind") == "numeric":
        prediction_entry = {"kind": "empty"}  # a profile from another task cannot be compared
    prediction = feature_drift(prediction_entry, np.asarray(predictions), thresholds, tests=tests)
    parts = [*(f["status"] for f in report_features.values()), prediction["status"]]
    return {
        "status": worst(parts),
        "n": int(len(predictions)),
        "thresholds": {**asdict(thresholds), "tests": tests, "p_value": thresholds.alpha / tests},
        "features": report_features,
        "prediction": prediction,
    }


def feature_drift(profile_entry: dict[str, Any], values: np.ndarray, thresholds: DriftThresholds = DEFAULT, *,
                  tests: int = 1) -> dict[str, Any]:
    """Measure how one column of a window moved from its reference profile entry."""
    kind = profile_entry.get("kind")
    if kind == "numeric":
        return _numeric_drift(profile_entry, values, thresholds, tests)
    if kind == "categorical":
        return _categorical_drift(profile_entry, values, thresholds, tests)
    return {"status": INSUFFICIENT, "kind": kind or "empty", "n": len(category_keys(values)),
            "reason": "the reference has no values to compare with"}


def personal_drift(profile_entry: dict[str, Any], values: np.ndarray, thresholds: DriftThresholds = DEFAULT, *,
                   tests: int = 1) -> dict[str, Any]:
    """Drift of a personal-data feature: measured on raw values when given, never naming bins or categories."""
    kind = profile_entry.get("kind") or "empty"
    if not _has_values(values):
        return {"status": INSUFFICIENT, "kind": kind, "n": 0, "pii": True, "reason": PII_REASON}
    found = feature_drift(profile_entry, values, thresholds, tests=tests)
    for side in ("reference", "current"):
        if isinstance(found.get(side), dict):
            found[side] = {"frequencies": found[side].get("frequencies")}
    return {**found, "pii": True}


def worst(statuses: list[str]) -> str:
    """Return the most severe of ``ok``/``warn``/``alert``; ``insufficient`` only when nothing else."""
    ranked = [s for s in statuses if s in STATUSES]
    if not ranked:
        return INSUFFICIENT if statuses else "ok"
    return max(ranked, key=STATUSES.index)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Compute the population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=float), PSI_EPSILON)
    cur = np.maximum(np.asarray(current, dtype=float), PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_values(values: np.ndarray) -> np.ndarray:
    """Return the non-missing values as floats (None, NaN and non-numbers are missing)."""
    array = np.asarray(values)
    try:
        floats = array.astype(float)
    except (TypeError, ValueError):
        floats = np.array([_to_float(v) for v in array.ravel()], dtype=float)
    return floats[~np.isnan(floats)]


def category_key(value: Any) -> str | None:
    """Key a value the way the profile keys categories; ``None`` for a missing value.

    Integral numbers are spelled without a decimal point, so ``1``, ``1.0`` and ``"1"`` meet.
    """
    if value is None or _is_na(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else str(float(value))
    return canonical_key(str(value.item() if isinstance(value, np.generic) else value))


def canonical_key(key: str) -> str:
    """Spell an integral numeric key without a decimal point (``"1.0"`` -> ``"1"``)."""
    try:
        number = float(key)
    except ValueError:
        return key
    return str(int(number)) if number.is_integer() else key


def category_keys(values: np.ndarray) -> list[str]:
    """Key every non-missing value of a categorical column."""
    return [k for k in keyed(values) if k is not None]


def keyed(values: np.ndarray) -> list[str | None]:
    """``category_key`` of every value, computed once per distinct value (columns repeat a few values)."""
    cache: dict[tuple[type, Any], str | None] = {}
    out = []
    for value in np.asarray(values, dtype=object).ravel():
        try:
            token = (value.__class__, value)  # the class keeps True apart from 1
            key = cache[token] if token in cache else cache.setdefault(token, category_key(value))
        except TypeError:  # an unhashable value: key it directly
            key = category_key(value)
        out.append(key)
    return out


def hashed_keys(values: np.ndarray, salt: str) -> list[str]:
    """Key every non-missing value by its salted hash, as a personal-data profile keys its categories."""
    cache: dict[tuple[type, Any], str | None] = {}
    out = []
    for value in np.asarray(values, dtype=object).ravel():
        try:
            token = (value.__class__, value)
            key = cache[token] if token in cache else cache.setdefault(token, pii.profile_key(salt, value))
        except TypeError:
            key = pii.profile_key(salt, value)
        if key is not None:
            out.append(key)
    return out


def _numeric_drift(entry: dict[str, Any], values: np.ndarray, thresholds: DriftThresholds, tests: int,
                   tested: tuple[float, float] | None = None) -> dict[str, Any]:
    """``tested``: the (statistic, p-value) of ``values`` (then already ``numeric_values``) when known."""
    present = values if tested is not None else numeric_values(values)
    edges = np.asarray(entry["bin_edges"], dtype=float)
    reference = np.asarray(entry["frequencies"], dtype=float)
    n = len(present)
    current = np.asarray(_bin_counts(present, edges), dtype=float) / n if n else np.zeros_like(reference)
    statistic = pvalue = None
    if tested is not None:
        statistic, pvalue = tested
    elif n and entry.get("sample"):
        # asymptotic p-values (ks_2samp's method="asymp"): windows hold at least min_samples
        # values, and the exact method costs n * m and falls back to this one when it overflows
        ((statistic, pvalue),) = ks.two_sample([present], [ks.sorted_sample(entry["sample"])])
    score = psi(reference, current) if n else None
    return {
        "status": _status(score, pvalue, n, thresholds, tests, ks=statistic),
        "kind": "numeric",
        "n": n,
        "psi": score,
        "ks_statistic": statistic,
        "ks_pvalue": pvalue,
        "reference": {"edges": edges.tolist(), "frequencies": reference.tolist()},
        "current": {"frequencies": current.tolist()},
    }


def _categorical_drift(entry: dict[str, Any], values: np.ndarray, thresholds: DriftThresholds,
                       tests: int) -> dict[str, Any]:
    names = [canonical_key(k) for k in entry["categories"]]
    reference = np.array([*entry["categories"].values(), entry.get("other_rate", 0.0)], dtype=float)
    index = {name: i for i, name in enumerate(names)}
    keys = hashed_keys(values, entry["salt"]) if entry.get("salt") else category_keys(values)
    n = len(keys)
    counts = np.bincount([index.get(k, len(names)) for k in keys], minlength=len(names) + 1).astype(float)
    current = counts / n if n else np.zeros_like(reference)
    reference_n = entry.get("count", 0) * (1.0 - entry.get("missing_rate", 0.0))
    statistic, pvalue = _homogeneity(reference * reference_n, counts, thresholds.min_expected)
    score = psi(reference, current) if n else None
    return {
        "status": _status(score, pvalue, n, thresholds, tests),
        "kind": "categorical",
        "n": n,
        "psi": score,
        "chi2_statistic": statistic,
        "chi2_pvalue": pvalue,
        "reference": {"categories": [*names, OTHER], "frequencies": reference.tolist()},
        "current": {"frequencies": current.tolist()},
    }


def _homogeneity(reference: np.ndarray, current: np.ndarray, min_expected: float) -> tuple[float | None, float | None]:
    """Chi-square test that two count vectors share one distribution; ``None`` when too sparse.

    Cells are taken largest first; those whose expected count in either sample would fall
    below ``min_expected`` are pooled, and a pool that is still sparse joins the smallest
    kept cell. Fewer than two usable cells leave nothing to test.
    """
    n_ref, n_cur = reference.sum(), current.sum()
    if n_ref <= 0 or n_cur <= 0:
        return None, None
    pooled = reference + current
    smaller = min(n_ref, n_cur) / (n_ref + n_cur)  # expected count = pooled * share of that sample
    order = np.argsort(-pooled, kind="stable")
    dense = [i for i in order if pooled[i] * smaller >= min_expected]
    sparse = [i for i in order if pooled[i] * smaller < min_expected]
    columns = [np.array([reference[i], current[i]]) for i in dense]
    if sparse:
        pool = np.array([reference[sparse].sum(), current[sparse].sum()])
        if pool.sum() * smaller >= min_expected or not columns:
            columns.append(pool)
        else:
            columns[-1] = columns[-1] + pool
    if len(columns) < 2:
        return None, None
    result = stats.chi2_contingency(np.column_stack(columns), correction=False)
    return float(result.statistic), float(result.pvalue)


def _status(score: float | None, pvalue: float | None, n: int, thresholds: DriftThresholds, tests: int,
            ks: float | None = None) -> str:
    if n < thresholds.min_samples or score is None:
        return INSUFFICIENT
    if pvalue is None:  # no test possible: PSI alone
        return "alert" if score >= thresholds.psi_alert else "warn" if score >= thresholds.psi_warn else "ok"
    evidence = pvalue < thresholds.alpha / max(tests, 1)
    material = score >= thresholds.psi_warn or (ks is not None and ks >= thresholds.ks_material)
    if evidence:
        return "alert" if material else "warn"
    return "ok"


def _has_values(values: np.ndarray | None) -> bool:
    return values is not None and any(key is not None for key in keyed(values))


def _is_na(value: Any) -> bool:
    """Tell pandas' NA and NaT (which refuse to be compared) from real values, without pandas."""
    return type(value).__name__ in ("NAType", "NaTType")


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
