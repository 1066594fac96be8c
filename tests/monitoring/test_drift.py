import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from service.models.profile import _bin_counts, profile_column, profile_predictions
from service.monitoring.drift import (
    DEFAULT,
    INSUFFICIENT,
    PSI_EPSILON,
    DriftThresholds,
    _status,
    category_key,
    drift_report,
    feature_drift,
    psi,
    worst,
)

RNG_SEED = 3


def numeric_entry(values, **extra) -> dict:
    return {**profile_column(pd.Series(values, dtype=float), "float"), **extra}


def categorical_entry(values) -> dict:
    return profile_column(pd.Series(values, dtype=object), "category")


def test_psi_of_identical_shares_is_zero():
    shares = [0.1, 0.2, 0.3, 0.4]
    assert psi(shares, shares) == 0.0


def test_psi_hand_computed():
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert expected == pytest.approx(0.2747, abs=1e-4)


def test_psi_floors_empty_bins_at_epsilon():
    expected = (1.0 - 0.5) * math.log(1.0 / 0.5) + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(expected)
    assert math.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))


def test_window_from_the_reference_itself_has_no_drift():
    values = np.random.default_rng(RNG_SEED).normal(size=1000)
    entry = numeric_entry(values)
    result = feature_drift(entry, values, DEFAULT)
    assert result["psi"] == pytest.approx(0.0, abs=1e-12)
    assert result["current"]["frequencies"] == pytest.approx(entry["frequencies"])
    assert result["ks_statistic"] == 0.0 and result["ks_pvalue"] == 1.0
    assert result["status"] == "ok"


def test_outer_bins_are_open():
    entry = {"kind": "numeric", "bin_edges": [0.0, 1.0, 2.0, 3.0], "frequencies": [1 / 3] * 3, "sample": [0.5, 1.5, 2.5]}
    values = np.array([-5.0] * 50 + [1.0] * 25 + [99.0] * 25)
    result = feature_drift(entry, values, DEFAULT)
    # below the first edge -> bin 0, on an inner edge -> the bin above it, above the last -> last bin
    assert result["current"]["frequencies"] == [0.5, 0.25, 0.25]
    assert result["current"]["frequencies"] == [c / 100 for c in _bin_counts(values, np.array(entry["bin_edges"]))]
    assert result["reference"]["edges"] == entry["bin_edges"]


def test_unseen_categories_fall_into_other():
    entry = categorical_entry(["a"] * 60 + ["b"] * 40)
    result = feature_drift(entry, np.array(["a"] * 50 + ["b"] * 30 + ["zzz"] * 20, dtype=object), DEFAULT)
    assert result["kind"] == "categorical"
    assert result["reference"]["categories"] == ["a", "b", "other"]
    assert result["reference"]["frequencies"] == pytest.approx([0.6, 0.4, 0.0])
    assert result["current"]["frequencies"] == pytest.approx([0.5, 0.3, 0.2])
    assert result["status"] == "alert"  # a fifth of the traffic is new: material and significant


def test_category_keys_match_the_profile_spelling():
    entry = profile_column(pd.Series([1, 2, 2, 1] * 30, dtype="int64"), "category")
    assert set(entry["categories"]) == {"1", "2"}
    for window in (np.array([1, 2] * 60), np.array([1.0, 2.0] * 60), np.array(["1", "2"] * 60, dtype=object)):
        result = feature_drift(entry, window, DEFAULT)
        assert result["current"]["frequencies"] == pytest.approx([0.5, 0.5, 0.0])
    assert [category_key(v) for v in (True, np.bool_(False), np.int64(3), 2.5, None, float("nan"), "x")] == \
        ["true", "false", "3", "2.5", None, None, "x"]


def test_missing_values_are_ignored():
    rng = np.random.default_rng(RNG_SEED)
    entry = numeric_entry(rng.normal(size=500))
    values = rng.normal(size=300)
    with_missing = np.concatenate([values, [np.nan] * 200]).astype(object)
    with_missing[-1] = None
    clean, holey = feature_drift(entry, values, DEFAULT), feature_drift(entry, with_missing, DEFAULT)
    assert holey["n"] == 300
    assert holey["psi"] == clean["psi"] and holey["ks_pvalue"] == clean["ks_pvalue"]
    categorical = categorical_entry(["a", "b"] * 100)
    result = feature_drift(categorical, np.array(["a", None, "b", float("nan")] * 50, dtype=object), DEFAULT)
    assert result["n"] == 100 and result["current"]["frequencies"] == pytest.approx([0.5, 0.5, 0.0])


def test_too_few_values_are_insufficient_and_do_not_raise_the_report():
    rng = np.random.default_rng(RNG_SEED)
    entry = numeric_entry(rng.normal(size=500))
    shifted = feature_drift(entry, rng.normal(loc=5.0, size=99), DEFAULT)
    assert shifted["status"] == INSUFFICIENT and shifted["n"] == 99 and shifted["psi"] > 1  # still measured
    empty = feature_drift(entry, np.array([np.nan] * 10), DEFAULT)
    assert empty["status"] == INSUFFICIENT and empty["n"] == 0 and empty["psi"] is None
    assert worst(["ok", INSUFFICIENT]) == "ok"
    assert worst([INSUFFICIENT, INSUFFICIENT]) == INSUFFICIENT
    assert worst(["warn", "alert", INSUFFICIENT, "ok"]) == "alert"


def test_status_combines_evidence_and_materiality():
    k = 10
    small_p, large_p = DEFAULT.alpha / k / 2, 0.5
    assert _status(0.12, small_p, 500, DEFAULT, k) == "alert"              # significant and material
    assert _status(0.02, small_p, 500, DEFAULT, k, ks=0.15) == "alert"     # material by KS
    assert _status(0.02, small_p, 500, DEFAULT, k, ks=0.03) == "warn"      # real but trivial
    assert _status(0.30, large_p, 500, DEFAULT, k) == "ok"                 # large but not told from noise
    assert _status(0.12, large_p, 500, DEFAULT, k) == "ok"
    assert _status(0.12, DEFAULT.alpha / 2, 500, DEFAULT, k) == "ok"       # significant alone, not after Bonferroni
    assert _status(0.30, None, 500, DEFAULT, k) == "alert"                 # no test possible: PSI alone
    assert _status(0.12, None, 500, DEFAULT, k) == "warn"
    assert _status(0.30, small_p, 99, DEFAULT, k) == INSUFFICIENT


def test_a_huge_window_with_a_trivial_shift_warns_but_does_not_alert():
    rng = np.random.default_rng(RNG_SEED)
    entry = numeric_entry(rng.normal(size=1000))
    result = feature_drift(entry, rng.normal(loc=0.15, size=200_000), DEFAULT)
    assert result["psi"] < DEFAULT.psi_warn and result["ks_statistic"] < DEFAULT.ks_material
    assert result["ks_pvalue"] < DEFAULT.alpha
    assert result["status"] == "warn"


def test_sparse_chi_square_cells_are_merged_or_skipped():
    entry = categorical_entry(["a"] * 980 + ["b"] * 10 + ["c"] * 10)
    result = feature_drift(entry, np.array(["a"] * 485 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5, dtype=object), DEFAULT)
    # expected counts of b and c reach 5; the unseen d does not and joins the smallest kept cell
    merged = stats.chi2_contingency([[980, 10, 10], [485, 5, 10]], correction=False)
    assert result["chi2_statistic"] == pytest.approx(merged.statistic)
    assert result["chi2_pvalue"] == pytest.approx(merged.pvalue)
    sparse = feature_drift(entry, np.array(["a"] * 97 + ["b", "c", "d"], dtype=object), DEFAULT)
    assert sparse["chi2_pvalue"] is None  # every small cell pooled into "a": nothing left to test
    lone = categorical_entry(["a"] * 1000)
    result = feature_drift(lone, np.array(["a"] * 120, dtype=object), DEFAULT)
    assert result["chi2_pvalue"] is None and result["status"] == "ok"  # one cell: PSI alone


def make_profile(rng) -> tuple[dict, list[dict], pd.DataFrame]:
    frame = pd.DataFrame({"x": rng.normal(size=800), "color": rng.choice(["red", "blue"], 800)})
    features = [{"name": "x", "type": "float"}, {"name": "color", "type": "category"}]
    profile = {"rows": 800, "features": {"x": profile_column(frame["x"], "float"),
                                         "color": profile_column(frame["color"], "category")},
               "prediction": profile_predictions(rng.integers(0, 2, 800), "classification")}
    return profile, features, frame


def test_report_shape_and_thresholds():
    rng = np.random.default_rng(RNG_SEED)
    profile, features, frame = make_profile(rng)
    window = frame.sample(400, random_state=1)
    report = drift_report(profile, features, {c: window[c].to_numpy() for c in window}, rng.integers(0, 2, 400),
                          "classification")
    assert report["status"] == "ok" and report["n"] == 400
    assert report["thresholds"]["tests"] == 3
    assert report["thresholds"]["p_value"] == pytest.approx(DEFAULT.alpha / 3)
    assert report["thresholds"]["psi_warn"] == 0.1 and report["thresholds"]["psi_alert"] == 0.25
    x, color, prediction = report["features"]["x"], report["features"]["color"], report["prediction"]
    assert set(x) >= {"status", "kind", "psi", "ks_statistic", "ks_pvalue", "reference", "current", "n"}
    assert set(color) >= {"status", "kind", "psi", "chi2_pvalue", "reference", "current", "n"}
    assert x["kind"] == "numeric" and color["kind"] == "categorical" and prediction["kind"] == "categorical"
    assert sorted(prediction["reference"]["categories"]) == ["0", "1", "other"]
    json.dumps(report, allow_nan=False)


def test_report_with_custom_thresholds_and_missing_columns():
    rng = np.random.default_rng(RNG_SEED)
    profile, features, frame = make_profile(rng)
    strict = DriftThresholds(psi_warn=0.0, alpha=1.0, min_samples=10)
    report = drift_report(profile, features, {"x": frame["x"].to_numpy()[:50] + 3}, np.array([0] * 50),
                          "classification", strict)
    assert report["thresholds"]["min_samples"] == 10
    assert report["features"]["color"]["status"] == INSUFFICIENT  # the column never arrived
    assert report["features"]["x"]["status"] == "alert"
    assert report["status"] == "alert"


def test_empty_window_is_insufficient():
    profile, features, _ = make_profile(np.random.default_rng(RNG_SEED))
    report = drift_report(profile, features, {}, np.array([]), "classification")
    assert report["status"] == INSUFFICIENT and report["n"] == 0
    json.dumps(report, allow_nan=False)


def test_regression_predictions_are_numeric():
    rng = np.random.default_rng(RNG_SEED)
    profile = {"features": {}, "prediction": profile_predictions(rng.normal(100, 10, 600), "regression")}
    report = drift_report(profile, [], {}, rng.normal(100, 10, 300), "regression")
    assert report["prediction"]["kind"] == "numeric" and report["prediction"]["status"] == "ok"
    shifted = drift_report(profile, [], {}, rng.normal(110, 10, 300), "regression")
    assert shifted["prediction"]["status"] == "alert"
