import json

import numpy as np
import pandas as pd
import pytest

from service.models.profile import profile_column
from service.monitoring.drift import drift_report
from service.monitoring.quality import DEFAULT, QualityThresholds, feature_quality, request_quality, window_quality

FEATURES = [
    {"name": "size", "type": "float", "min": 0.0, "max": None, "categories": None},
    {"name": "color", "type": "category", "min": None, "max": None, "categories": ["red", "blue"]},
]


def reference() -> dict:
    size = pd.Series([*np.linspace(1.0, 10.0, 180), *[np.nan] * 20])  # 10 % missing in training
    color = pd.Series(["red", "blue"] * 100)
    return {"features": {"size": profile_column(size, "float"), "color": profile_column(color, "category")}}


def test_rates_on_hand_made_data():
    size = np.array([np.nan] * 40 + [0.5] * 16 + [20.0] * 16 + [5.0] * 128)  # 200 rows
    color = np.array(["red"] * 150 + ["green"] * 30 + [None] * 20, dtype=object)
    result = window_quality(reference(), FEATURES, {"size": size, "color": color})
    s, c = result["features"]["size"], result["features"]["color"]
    assert (s["n"], s["missing"], s["missing_rate"], s["reference_missing_rate"]) == (200, 40, 0.2, 0.1)
    assert s["missing_status"] == "warn"                      # 10 points above the reference
    assert s["range"] == [1.0, 10.0]                          # the training range, not the schema's
    assert (s["out_of_range"], s["out_of_range_rate"]) == (32, 0.2)  # 32 of 160 present values
    assert s["out_of_range_status"] == "alert" and s["status"] == "alert"
    assert (c["missing"], c["missing_rate"], c["missing_status"]) == (20, 0.1, "warn")
    assert (c["unseen"], c["unseen_rate"], c["unseen_status"]) == (30, 30 / 180, "warn")
    assert c["status"] == "warn"
    assert result["status"] == "alert" and result["n"] == 200
    assert result["counts"] == {"missing": 60, "out_of_range": 32, "unseen": 30}
    assert result["thresholds"] == {**result["thresholds"], "missing_warn": 0.05, "missing_alert": 0.2}
    json.dumps(result, allow_nan=False)


def test_rates_are_judged_against_the_reference():
    size = np.array([np.nan] * 24 + [5.0] * 176)  # 12 % missing against 10 % in training
    result = window_quality(reference(), FEATURES, {"size": size, "color": np.array(["red", "blue"] * 100)})
    assert result["features"]["size"]["missing_status"] == "ok"
    assert result["status"] == "ok"
    rare = pd.Series([f"c{i}" for i in range(60)] * 3 + ["common"] * 120)
    entry = profile_column(rare, "category")  # keeps 50 categories, the rest is other_rate
    window = np.array([f"c{i}" for i in range(60)] * 3 + ["common"] * 120, dtype=object)
    result = feature_quality(entry, {"name": "rare", "type": "category"}, window, len(window))
    assert result["unseen_rate"] == pytest.approx(entry["other_rate"]) and result["unseen_rate"] > 0.05
    assert result["unseen_status"] == "ok"


def test_thresholds_are_reached_at_their_value():
    values = np.array([np.nan] * 5 + [5.0] * 95)
    entry = {"kind": "numeric", "missing_rate": 0.0, "min": 0.0, "max": 10.0}
    assert feature_quality(entry, FEATURES[0], values, 100)["missing_status"] == "warn"
    entry = {"kind": "numeric", "missing_rate": 0.10, "min": 0.0, "max": 10.0}
    values = np.array([np.nan] * 15 + [5.0] * 85)
    assert feature_quality(entry, FEATURES[0], values, 100)["missing_status"] == "warn"


def test_small_batches_are_insufficient_but_counted():
    result = window_quality(reference(), FEATURES, {"size": np.array([np.nan, 50.0]), "color": np.array(["green", "red"])})
    assert result["status"] == "insufficient"
    size = result["features"]["size"]
    assert (size["missing"], size["out_of_range"], size["status"], size["missing_status"]) == (1, 1, "insufficient",
                                                                                             "insufficient")
    assert result["counts"] == {"missing": 1, "out_of_range": 1, "unseen": 1}
    lenient = QualityThresholds(min_samples=1)
    assert window_quality(reference(), FEATURES, {"size": np.array([50.0])}, lenient)["status"] == "alert"


def test_an_absent_column_is_all_missing():
    result = window_quality(reference(), FEATURES, {"size": np.full(150, 5.0)})
    color = result["features"]["color"]
    assert (color["missing"], color["missing_rate"], color["status"]) == (150, 1.0, "alert")


def test_request_quality_uses_the_schema_without_a_profile():
    columns = {"size": np.array([-1.0, 2.0, None] * 40, dtype=object), "color": np.array(["red", "pink", "blue"] * 40)}
    result = request_quality(FEATURES, columns)
    size, color = result["features"]["size"], result["features"]["color"]
    assert size["range"] == [0.0, None] and size["out_of_range"] == 40 and size["missing"] == 40
    assert color["unseen"] == 40 and color["unseen_status"] == "alert"
    with_profile = request_quality(FEATURES, columns, reference())
    assert with_profile["features"]["size"]["range"] == [1.0, 10.0]
    assert with_profile == window_quality(reference(), FEATURES, columns, DEFAULT)


def test_missing_values_count_for_quality_and_are_ignored_by_drift():
    size = np.array([np.nan] * 100 + list(np.linspace(1.0, 10.0, 180)))
    color = np.array(["red", "blue"] * 140, dtype=object)
    color[:100] = None
    columns = {"size": size, "color": color}
    quality = window_quality(reference(), FEATURES, columns)
    assert quality["features"]["size"]["missing"] == 100 and quality["features"]["color"]["missing"] == 100
    assert quality["status"] == "alert"
    profile = {**reference(), "prediction": profile_column(pd.Series([0, 1] * 50), "category")}
    drift = drift_report(profile, FEATURES, columns, np.array([0, 1] * 140), "classification")
    assert drift["features"]["size"]["n"] == 180 and drift["features"]["color"]["n"] == 180
    assert drift["features"]["size"]["status"] == "ok" and drift["features"]["color"]["status"] == "ok"


def test_numeric_features_checked_together_report_what_each_checked_alone_reports():
    from service.monitoring import quality

    rng = np.random.default_rng(3)
    for trial in range(200):
        rows = int(rng.choice([1, 3, 99, 100, 250]))
        features, profiles, columns = [], {}, {}
        for j in range(int(rng.integers(1, 6))):
            name = f"x{j}"
            kind = str(rng.choice(["float", "int", "bool"]))
            features.append({"name": name, "type": "float" if kind == "bool" else kind, "pii": bool(rng.random() < 0.2)})
            low = None if rng.random() < 0.3 else float(rng.normal())
            high = None if rng.random() < 0.3 else float(rng.normal() + 2)
            profiles[name] = {"kind": "numeric", "min": low, "max": high, "missing_rate": float(rng.choice([0.0, 0.1]))}
            if kind == "float":
                values = rng.normal(size=rows) * 2
                values[rng.random(rows) < rng.choice([0.0, 0.1, 0.5])] = np.nan
            elif kind == "int":
                values = rng.integers(-3, 4, size=rows)
            else:
                values = rng.random(rows) < 0.5
            columns[name] = values
        thresholds = quality.QualityThresholds(min_samples=int(rng.choice([1, 100])))
        together = quality._numeric_together(profiles, features, columns, thresholds)
        assert set(together) == {f["name"] for f in features}, trial
        for feature in features:
            alone = quality.feature_quality(profiles[feature["name"]], feature, columns[feature["name"]], rows, thresholds)
            assert together[feature["name"]] == alone, (trial, feature)
            assert list(together[feature["name"]]) == list(alone)  # same keys in the same order


def test_columns_that_cannot_be_checked_together_are_checked_alone():
    from service.monitoring import quality

    features = [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}, {"name": "c", "type": "category"}]
    columns = {"a": np.array([1.0, None], dtype=object), "b": np.array([0.5, 2.0]), "c": np.array(["x", "y"])}
    profiles = {"a": {"kind": "numeric", "min": 0.0, "max": 1.0}, "b": {"kind": "numeric", "min": 0.0, "max": 1.0},
                "c": {"kind": "categorical", "categories": {"x": 1.0}}}
    assert set(quality._numeric_together(profiles, features, columns, quality.DEFAULT)) == {"b"}
    report = quality.window_quality({"features": profiles}, features, columns)
    assert report["counts"] == {"missing": 1, "out_of_range": 1, "unseen": 1}


def test_request_counts_of_a_float_block_equal_the_full_reports_totals():
    """The metric's fast count (one block, a plan per feature list) against ``request_quality``."""
    from service.monitoring import quality

    rng = np.random.default_rng(11)
    for trial in range(200):
        rows = int(rng.choice([1, 2, 64, 300]))
        n_features = int(rng.integers(1, 7))
        features, profiles = [], {}
        for j in range(n_features):
            name = f"x{j}"
            features.append({"name": name, "type": "float", "min": None, "max": None, "categories": None})
            if rng.random() < 0.2:  # a float feature profiled as categorical: counted alone, as unseen values
                profiles[name] = {"kind": "categorical", "categories": {"1.0": 0.5, "2.0": 0.5}, "missing_rate": 0.0}
            elif rng.random() < 0.9:
                low = None if rng.random() < 0.3 else float(rng.normal())
                high = None if rng.random() < 0.3 else float(rng.normal() + 2)
                profiles[name] = {"kind": "numeric", "min": low, "max": high, "missing_rate": 0.0}
        block = np.ascontiguousarray(rng.choice([1.0, 2.0, 3.0, -4.0, np.nan], size=(n_features, rows)) * rng.choice([1, 1.5]))
        columns = {f["name"]: block[i] for i, f in enumerate(features)}
        profile = None if rng.random() < 0.25 else {"features": profiles}
        expected = request_quality(features, columns, profile)["counts"]
        assert quality.request_counts(features, profile, block=block) == expected, trial
        assert quality.request_counts(features, profile, columns=columns) == expected, trial


def test_request_counts_without_a_block_take_the_general_path():
    columns = {"size": np.array([np.nan, 50.0, -1.0]), "color": np.array(["green", "red", None], dtype=object)}
    from service.monitoring.quality import request_counts

    assert request_counts(FEATURES, reference(), columns=columns) == \
        request_quality(FEATURES, columns, reference())["counts"] == {"missing": 2, "out_of_range": 2, "unseen": 1}
