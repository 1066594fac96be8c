import dataclasses
import json

import numpy as np
import pytest

from service.monitoring.bias import MISSING_GROUP, BiasThresholds, bias_report, group_rows

GROUP = [{"name": "group", "type": "category", "sensitive": True}, {"name": "x", "type": "float"}]


def report(groups, predictions, labels=None, *, task="classification", classes=(0, 1), features=GROUP, **kwargs):
    columns = {"group": np.array(groups, dtype=object), "x": np.zeros(len(groups))}
    labels = None if labels is None else np.array(labels, dtype=object)
    return bias_report(features, columns, np.array(predictions, dtype=object), labels, task,
                       None if classes is None else list(classes), **kwargs)


def test_nothing_sensitive_is_ok_and_empty():
    features = [{"name": "x", "type": "float", "sensitive": False}, {"name": "y", "type": "int"}]
    assert bias_report(features, {"x": np.zeros(3)}, np.zeros(3), None, "classification", [0, 1]) == \
        {"status": "ok", "features": {}}


def test_binary_rates_accuracy_and_gaps_by_hand():
    # a: predicted 1 1 0 0, labels 1 1 1 0 -> rate .5, accuracy 3/4, TPR 2/3
    # b: predicted 1 0 0 0, labels 1 0 1 0 -> rate .25, accuracy 3/4, TPR 1/2
    # c: one row, under min_group; None: the missing group
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] + [None] * 2
    predictions = [1, 1, 0, 0] + [1, 0, 0, 0] + [1] + [1, 1]
    labels = [1, 1, 1, 0] + [1, 0, 1, 0] + [1] + [0, 0]
    result = report(groups, predictions, labels, min_group=2)
    feature = result["features"]["group"]
    assert feature["grouping"] == "category"
    assert feature["groups"]["a"] == pytest.approx({"count": 4, "labelled": 4, "accuracy": 0.75, "positive_rate": 0.5,
                                                    "positives": 3, "true_positive_rate": 2 / 3})
    assert feature["groups"]["b"] == pytest.approx({"count": 4, "labelled": 4, "accuracy": 0.75, "positive_rate": 0.25,
                                                    "positives": 2, "true_positive_rate": 0.5})
    assert feature["groups"][MISSING_GROUP]["positive_rate"] == 1.0
    assert sorted(feature["excluded_groups"]) == sorted(["c", MISSING_GROUP])  # rate 1.0 each, left out of the gaps
    assert feature["demographic_parity_difference"] == pytest.approx(0.25)
    assert feature["equal_opportunity_difference"] == pytest.approx(1 / 6)
    assert feature["status"] == "alert" and result["status"] == "alert"
    json.dumps(result)


def test_equal_opportunity_needs_enough_positive_labels():
    # b has enough rows for parity but only one positive label
    groups = ["a"] * 4 + ["b"] * 4
    result = report(groups, [1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 0, 0, 0], min_group=2)
    feature = result["features"]["group"]
    assert feature["groups"]["b"]["true_positive_rate"] == 1.0 and feature["groups"]["b"]["positives"] == 1
    assert feature["demographic_parity_difference"] == 0.0
    assert feature["equal_opportunity_difference"] is None
    assert feature["status"] == "ok"


def test_without_labels_only_parity():
    result = report(["a", "a", "b", "b"], [1, 1, 1, 0], min_group=2)
    feature = result["features"]["group"]
    assert feature["groups"]["a"] == {"count": 2, "labelled": 0, "accuracy": None, "positive_rate": 1.0, "positives": 0,
                                      "true_positive_rate": None}
    assert feature["demographic_parity_difference"] == 0.5 and feature["equal_opportunity_difference"] is None


@pytest.mark.parametrize(("positives_in_b", "status"), [(5, "ok"), (4, "ok"), (3, "warn"), (2, "alert")])
def test_parity_status_boundaries(positives_in_b, status):
    # a predicts positive 5 in 10; b gives gaps 0, 0.1 (exactly warn), 0.2 (exactly alert), 0.3
    groups = ["a"] * 10 + ["b"] * 10
    predictions = [1] * 5 + [0] * 5 + [1] * positives_in_b + [0] * (10 - positives_in_b)
    feature = report(groups, predictions, min_group=10)["features"]["group"]
    assert feature["demographic_parity_difference"] == pytest.approx((5 - positives_in_b) / 10)
    assert feature["status"] == status


def test_custom_thresholds_are_frozen_and_checked():
    groups = ["a"] * 10 + ["b"] * 10
    predictions = [1] * 5 + [0] * 5 + [1] * 4 + [0] * 6
    assert report(groups, predictions, min_group=10, thresholds=BiasThresholds(warn=0.05, alert=0.5))["status"] == "warn"
    with pytest.raises(dataclasses.FrozenInstanceError):
        BiasThresholds().warn = 0.3
    with pytest.raises(ValueError):
        BiasThresholds(warn=0.3, alert=0.2)


def test_groups_under_min_group_are_excluded_and_one_group_gives_no_gap():
    groups = ["a"] * 30 + ["b"] * 29
    feature = report(groups, [1] * 30 + [0] * 29, [1] * 59)["features"]["group"]  # default min_group 30
    assert feature["excluded_groups"] == ["b"]
    assert feature["demographic_parity_difference"] is None and feature["equal_opportunity_difference"] is None
    assert feature["status"] == "ok"
    assert feature["groups"]["b"]["count"] == 29  # still shown


def test_string_classes_and_json_labels():
    # positive class is classes[1] = "yes"; labels arrive in any JSON form, unknown ones ignored
    groups = ["f", "f", "m", "m"]
    result = report(groups, ["yes", "no", "no", "no"], ["yes", "yes", "yes", "maybe"], classes=("no", "yes"), min_group=2)
    groups_out = result["features"]["group"]["groups"]
    assert groups_out["f"]["positive_rate"] == 0.5 and groups_out["f"]["true_positive_rate"] == 0.5
    assert groups_out["m"]["labelled"] == 1 and groups_out["m"]["true_positive_rate"] == 0.0
    assert result["features"]["group"]["demographic_parity_difference"] == 0.5
    int_classes = report(["a", "b"], [1, 0], ["1", 0.0], min_group=1)["features"]["group"]["groups"]
    assert int_classes["a"]["accuracy"] == 1.0 and int_classes["b"]["accuracy"] == 1.0


def test_multiclass_rates_per_class_and_widest_gap():
    # a predicts 0 0 1 2, b predicts 0 1 1 1: rate gaps 0.25, 0.5, 0.25
    # both have labels 0 1 1 2: recall a 1 .5 1, b 1 1 0 -> recall gaps 0, .5, 1
    groups = ["a"] * 4 + ["b"] * 4
    predictions = [0, 0, 1, 2, 0, 1, 1, 1]
    labels = [0, 1, 1, 2, 0, 1, 1, 2]
    feature = report(groups, predictions, labels, classes=(0, 1, 2), min_group=1)["features"]["group"]
    a, b = feature["groups"]["a"], feature["groups"]["b"]
    assert a["prediction_rates"] == {"0": 0.5, "1": 0.25, "2": 0.25}
    assert b["prediction_rates"] == {"0": 0.25, "1": 0.75, "2": 0.0}
    assert a["label_counts"] == {"0": 1, "1": 2, "2": 1}
    assert a["true_positive_rates"] == pytest.approx({"0": 1.0, "1": 0.5, "2": 1.0})
    assert b["true_positive_rates"] == pytest.approx({"0": 1.0, "1": 1.0, "2": 0.0})
    assert feature["demographic_parity_by_class"] == pytest.approx({"0": 0.25, "1": 0.5, "2": 0.25})
    assert feature["equal_opportunity_by_class"] == pytest.approx({"0": 0.0, "1": 0.5, "2": 1.0})
    assert feature["demographic_parity_difference"] == pytest.approx(0.5)
    assert feature["equal_opportunity_difference"] == pytest.approx(1.0)
    assert feature["status"] == "alert"


def test_regression_mean_prediction_mae_and_standardized_gap():
    groups = ["a", "a", "b", "b"]
    predictions = [1.0, 3.0, 3.0, 5.0]  # means 2 and 4, window std = sqrt(2)
    result = report(groups, predictions, [1.0, 1.0, "3", None], task="regression", classes=None, min_group=2)
    feature = result["features"]["group"]
    assert feature["groups"]["a"] == {"count": 2, "mean_prediction": 2.0, "labelled": 2, "mae": 1.0}
    assert feature["groups"]["b"] == {"count": 2, "mean_prediction": 4.0, "labelled": 1, "mae": 0.0}
    assert feature["demographic_parity_difference"] == 2.0
    assert feature["standardized_parity_difference"] == pytest.approx(2 / np.sqrt(2))
    assert feature["equal_opportunity_difference"] is None and feature["status"] == "alert"
    same = report(groups, [2.0, 2.0, 2.0, 2.0], task="regression", classes=None, min_group=2)["features"]["group"]
    assert same["standardized_parity_difference"] == 0.0 and same["status"] == "ok"


def test_numeric_sensitive_feature_in_quartile_bins():
    grouping, keys, index = group_rows(np.arange(1, 9), "int")  # quartiles 1, 2.75, 4.5, 6.25, 8
    assert grouping == "quartile"
    assert keys == ["[1, 2.75)", "[2.75, 4.5)", "[4.5, 6.25)", "[6.25, 8]"]
    assert index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # tied quartiles merge: 0 0 0 0 0 0 1 2 3 4 5 has q0 = q25 = q50 = 0
    grouping, keys, index = group_rows(np.array([0] * 6 + [1, 2, 3, 4, 5], dtype=float), "float")
    assert keys == ["[0, 2.5)", "[2.5, 5]"] and index.tolist() == [0] * 8 + [1] * 3


def test_numeric_feature_with_few_values_groups_by_value_and_keeps_missing_apart():
    grouping, keys, index = group_rows(np.array([0.0, 1.0, np.nan, 1.0, "n/a"], dtype=object), "int")
    assert (grouping, keys, index.tolist()) == ("value", ["0", "1"], [0, 1, -1, 1, -1])
    grouping, keys, index = group_rows(np.array([True, False, None, True], dtype=object), "bool")
    assert (grouping, keys, index.tolist()) == ("category", ["false", "true"], [1, 0, -1, 1])


def test_numeric_feature_report_end_to_end():
    features = [{"name": "age", "type": "float", "sensitive": True}]
    age = np.arange(1.0, 9.0)
    predictions = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    result = bias_report(features, {"age": age}, predictions, None, "classification", [0, 1], min_group=2)
    feature = result["features"]["age"]
    assert list(feature["groups"]) == ["[1, 2.75)", "[2.75, 4.5)", "[4.5, 6.25)", "[6.25, 8]"]
    assert feature["demographic_parity_difference"] == 1.0 and feature["status"] == "alert"


def test_missing_column_reports_no_groups():
    features = [{"name": "age", "type": "float", "sensitive": True}]
    result = bias_report(features, {}, np.array([1, 0]), None, "classification", [0, 1])
    assert result == {"status": "ok", "features": {"age": {
        "grouping": None, "groups": {}, "excluded_groups": [], "demographic_parity_difference": None,
        "equal_opportunity_difference": None, "status": "ok"}}}
