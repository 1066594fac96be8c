import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from service.models.evaluation import evaluate
from service.monitoring.performance import (
    MISSING,
    UNKNOWN,
    PerformanceThresholds,
    _probability_matrix,
    coerce_labels,
    live_performance,
    outcomes,
    timeline,
    worst_status,
)

# a binary confusion matrix worked by hand: TP 3, FN 1, FP 1, TN 3
Y = [1, 1, 1, 1, 0, 0, 0, 0]
P = [1, 1, 0, 1, 1, 0, 0, 0]
# positive scores: positives 0.9 0.8 0.3 0.7, negatives 0.6 0.1 0.2 0.4 -> 14 of 16 pairs ordered
SCORES = [0.9, 0.8, 0.3, 0.7, 0.6, 0.1, 0.2, 0.4]


def binary(predictions, labels, probabilities=None, reference=None, classes=(0, 1), **kwargs):
    return live_performance("classification", list(classes), np.asarray(predictions, dtype=object),
                            np.asarray(labels, dtype=object), probabilities, reference or {}, **kwargs)


def test_binary_metrics_by_hand():
    proba = [[1 - s, s] for s in SCORES]
    result = binary(P, Y, proba, min_labels=1)
    assert result["labelled"] == 8
    assert result["metrics"] == pytest.approx({"accuracy": 0.75, "precision": 0.75, "recall": 0.75, "f1": 0.75,
                                               "roc_auc": 14 / 16})
    json.dumps(result)


def test_positive_class_is_classes_1_with_string_classes():
    # "spam" is the positive class: TP 1, FP 2, FN 0
    result = live_performance("classification", ["ham", "spam"], np.array(["spam", "spam", "spam", "ham"]),
                              np.array(["spam", "ham", "ham", "ham"]), None, {}, min_labels=1)
    assert result["metrics"] == pytest.approx({"accuracy": 0.5, "precision": 1 / 3, "recall": 1.0, "f1": 0.5})


def test_matches_packaging_evaluate_on_the_same_rows():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = pd.Series(np.where(X["a"] + rng.normal(scale=1.0, size=200) > 0, "yes", "no"))
    model = LogisticRegression().fit(X, y)
    holdout = evaluate(model, X, y, "classification")
    live = live_performance("classification", list(model.classes_), model.predict(X), y.to_numpy(),
                            model.predict_proba(X), holdout)
    for name, value in live["metrics"].items():
        assert value == pytest.approx(holdout[name])
    assert live["status"] == "ok" and all(d == pytest.approx(0) for d in live["delta"].values())
    assert set(live["reference"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}  # no log_loss


def test_undefined_binary_metrics_are_left_out_not_zero():
    # no positive label and no positive prediction: precision, recall and F1 have no denominator
    result = binary([0, 0, 0], [0, 0, 0], min_labels=1)
    assert result["metrics"] == {"accuracy": 1.0}
    result = binary([0, 0, 0], [1, 0, 0], min_labels=1)
    assert result["metrics"] == pytest.approx({"accuracy": 2 / 3, "recall": 0.0, "f1": 0.0})


def test_roc_auc_needs_both_classes_and_uses_rows_with_probabilities():
    assert "roc_auc" not in binary([1, 1], [1, 1], [[0.2, 0.8], [0.1, 0.9]], min_labels=1)["metrics"]
    proba = [[1 - s, s] for s in SCORES] + [None, [np.nan, np.nan]]
    result = binary(P + [1, 0], Y + [0, 1], proba, min_labels=1)
    assert result["labelled"] == 10 and result["metrics"]["roc_auc"] == pytest.approx(14 / 16)
    assert "roc_auc" not in binary(P, Y, [[0.5, 0.5]], min_labels=1)["metrics"]  # misaligned: ignored


def test_multiclass_macro_by_hand():
    y, p = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # per class precision .5 2/3 1, recall .5 1 .5, F1 .5 .8 2/3
    proba = [[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.5, 0.1, 0.4]]
    result = live_performance("classification", [0, 1, 2], np.array(p), np.array(y), np.array(proba), {}, min_labels=1)
    assert result["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert result["metrics"]["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert result["metrics"]["recall"] == pytest.approx(2 / 3)
    assert result["metrics"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert 0 < result["metrics"]["roc_auc"] <= 1
    missing_class = live_performance("classification", [0, 1, 2], np.array(p[:4]), np.array(y[:4]),
                                     np.array(proba[:4]), {}, min_labels=1)
    assert "roc_auc" not in missing_class["metrics"]


def test_multiclass_roc_auc_tolerates_rounded_probabilities():
    proba = np.array([[0.3334, 0.3333, 0.3334], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])  # first row sums to 1.0001
    result = live_performance("classification", ["a", "b", "c"], np.array(["a", "b", "c"]), np.array(["a", "b", "c"]),
                              proba, {}, min_labels=1)
    assert result["metrics"]["roc_auc"] == pytest.approx(1.0)


def test_json_labels_are_coerced_to_int_classes_and_unknown_ones_counted():
    result = binary([1, 1, 0, 0, 1, 0], ["1", 1.0, 0, "0", None, "cat"], min_labels=1)
    assert result["labelled"] == 4 and result["unknown_labels"] == 1
    assert result["metrics"]["accuracy"] == 1.0


def test_json_labels_are_coerced_to_string_classes():
    result = binary(["1", "2", "2"], [1, 2.0, " 2"], classes=("1", "2"), min_labels=1)
    assert result["labelled"] == 2 and result["unknown_labels"] == 1  # " 2" is not "2" for a string class
    assert result["metrics"]["accuracy"] == 1.0


def test_coerce_labels_reads_each_json_form():
    assert coerce_labels([0, 1.0, "1", "0.0", None, float("nan"), "x", 2], [0, 1]).tolist() == \
        [0, 1, 1, 0, MISSING, MISSING, UNKNOWN, UNKNOWN]
    assert coerce_labels([True, "false", 1, "true"], [False, True]).tolist() == [1, 0, UNKNOWN, 1]
    assert coerce_labels([np.int64(2), "b", 2.5], ["a", "b", 2]).tolist() == [2, 1, UNKNOWN]


@pytest.mark.parametrize("classes", [[0, 1], ["0", "-0.0", "1"], [False, True], ["a", "b", 2], [-0.0, 1.5]])
def test_coerce_labels_of_a_long_column_equal_each_value_alone(classes):
    values = [0, 1.0, "1", "0.0", -0.0, 0.0, "-0.0", None, float("nan"), "x", 2, True, False, "true", np.int64(1),
              np.float64(-0.0), np.bool_(True), [1], {"a": 1}, 1.5, "1.5", "b"] * 3
    alone = [int(coerce_labels([value], classes)[0]) for value in values]
    assert coerce_labels(values, classes).tolist() == alone
    for column in (np.array([1, 0, 1, 1, 2]), np.array([0.0, -0.0, 1.0, np.nan, 1.5, 2.0, -0.0]),
                   np.array([True, False, True]), np.array([1, 2], dtype=np.uint8), np.array([0.5, 1.0], dtype=np.float32)):
        assert coerce_labels(column, classes).tolist() == [int(coerce_labels([v], classes)[0]) for v in column]
    assert coerce_labels(np.array([], dtype=float), classes).tolist() == []


def test_a_stored_probability_matrix_reads_as_its_rows_do():
    matrix = np.array([[0.2, 0.8], [1.0, 0.0], [np.nan, np.nan]], dtype=np.float32)
    rows = [list(row) for row in matrix]
    fast, slow = _probability_matrix(matrix, 3, 2), _probability_matrix(rows, 3, 2)
    assert fast.dtype == slow.dtype == np.float64 and np.array_equal(fast, slow, equal_nan=True)
    assert _probability_matrix(matrix, 3, 3) is not None and np.isnan(_probability_matrix(matrix, 3, 3)).all()


def test_unknown_predictions_are_counted_and_left_out():
    result = binary([1, 7, 0], [1, 1, 0], min_labels=1)
    assert (result["labelled"], result["unknown_predictions"]) == (2, 1)


def test_regression_metrics_by_hand():
    result = live_performance("regression", None, np.array([1.0, 2, 3, 6, 9]), np.array([1, "2", 3.0, 4, None], dtype=object),
                              None, {"rmse": 1.0, "mae": 0.5, "r2": 0.2, "note": "x"}, min_labels=1)
    # errors 0 0 0 2: MAE 0.5, RMSE 1, R2 = 1 - 4/5
    assert result["labelled"] == 4
    assert result["metrics"] == pytest.approx({"rmse": 1.0, "mae": 0.5, "r2": 0.2})
    assert result["delta"] == pytest.approx({"rmse": 0.0, "mae": 0.0, "r2": 0.0})
    assert result["status"] == "ok"


def test_regression_unknown_labels_and_constant_labels():
    result = live_performance("regression", None, np.array([1.0, 2.0, 3.0]), np.array(["a", 2, float("inf")], dtype=object),
                              None, {}, min_labels=1)
    assert (result["labelled"], result["unknown_labels"]) == (1, 2)
    assert "r2" not in result["metrics"]  # undefined for one row
    constant = live_performance("regression", None, np.array([1.0, 2.0]), np.array([2.0, 2.0]), None, {}, min_labels=1)
    assert constant["metrics"] == pytest.approx({"rmse": np.sqrt(0.5), "mae": 0.5})


def accuracy_run(correct: int, n: int, reference: float = 0.9, **kwargs):
    labels = [1] * n
    predictions = [1] * correct + [0] * (n - correct)
    return binary(predictions, labels, reference={"accuracy": reference}, min_labels=n, **kwargs)


@pytest.mark.parametrize(("correct", "n", "status"), [
    (18, 20, "ok"),      # 0.90
    (17, 20, "ok"),      # 0.85: exactly reference - 0.05 is not below it
    (21, 25, "warn"),    # 0.84
    (16, 20, "warn"),    # 0.80: exactly reference - 0.10
    (79, 100, "alert"),  # 0.79
])
def test_higher_is_better_boundaries(correct, n, status):
    result = accuracy_run(correct, n)
    assert result["status"] == status
    (check,) = result["checks"]
    assert check["metric"] == "accuracy" and check["status"] == status
    assert (check["warn_at"], check["alert_at"]) == pytest.approx((0.85, 0.80))


@pytest.mark.parametrize(("error", "status"), [(1.0, "ok"), (1.1, "ok"), (1.11, "warn"), (1.25, "warn"), (1.26, "alert")])
def test_error_metric_boundaries_are_relative(error, status):
    labels = np.zeros(30)
    result = live_performance("regression", None, labels + error, labels, None, {"mae": 1.0}, min_labels=30)
    assert result["status"] == status and result["checks"][0]["metric"] == "mae"
    assert result["checks"][0]["warn_at"] == pytest.approx(1.1) and result["checks"][0]["alert_at"] == pytest.approx(1.25)


def test_custom_thresholds_are_frozen_and_checked():
    strict = PerformanceThresholds(warn_drop=0.01, alert_drop=0.02)
    assert accuracy_run(88, 100, thresholds=strict)["status"] == "warn"
    assert accuracy_run(87, 100, thresholds=strict)["status"] == "alert"
    with pytest.raises(dataclasses.FrozenInstanceError):
        strict.warn_drop = 0.5
    with pytest.raises(ValueError):
        PerformanceThresholds(warn_drop=0.2, alert_drop=0.1)


def test_insufficient_labels():
    result = binary([0] * 29, [1] * 29, reference={"accuracy": 0.9})
    assert result["status"] == "insufficient" and result["labelled"] == 29 and result["checks"] == []
    assert result["metrics"]["accuracy"] == 0.0  # still shown
    assert binary([0] * 30, [1] * 30, reference={"accuracy": 0.9})["status"] == "alert"
    nothing = binary([0, 1], [None, None], reference={"accuracy": 0.9})
    assert (nothing["status"], nothing["labelled"], nothing["metrics"], nothing["delta"]) == ("insufficient", 0, {}, {})
    assert live_performance("classification", [0, 1], np.array([0, 1]), None, None, {})["labelled"] == 0


def test_reference_may_be_the_whole_metrics_block():
    result = binary([1] * 30, [1] * 30, reference={"holdout": {"accuracy": 0.9, "log_loss": 0.3}, "cv": None})
    assert result["reference"] == {"accuracy": 0.9} and result["delta"]["accuracy"] == pytest.approx(0.1)


def test_outcomes_and_timeline():
    correct = outcomes("classification", [0, 1], np.array([1, 0, 1, 1]), np.array([1, 1, None, "x"], dtype=object))
    assert correct[:2].tolist() == [1.0, 0.0] and np.isnan(correct[2:]).all()
    errors = outcomes("regression", None, np.array([1.0, 5.0]), np.array([2.0, None], dtype=object))
    assert errors[0] == 1.0 and np.isnan(errors[1])
    ts = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], dtype=float)
    values = np.array([1, 1, 0, 1, 0, 0, np.nan, 1, 1, 1, 1, 1], dtype=float)
    points = timeline(ts, values, buckets=3)  # edges 0, 11/3, 22/3, 11
    assert [p["n"] for p in points] == [4, 3, 4]
    assert [p["value"] for p in points] == pytest.approx([0.75, 1 / 3, 1.0])  # 4..7 hold 0 0 (NaN) 1
    assert points[0]["start"] == 0 and points[-1]["end"] == 11


def test_timeline_edges():
    assert timeline(np.array([]), np.array([])) == []
    assert timeline(np.array([5.0, 5.0]), np.array([1.0, 0.0])) == [{"start": 5.0, "end": 5.0, "n": 2, "value": 0.5}]
    gaps = timeline(np.array([0.0, 10.0]), np.array([1.0, 3.0]), buckets=5)
    assert [p["value"] for p in gaps] == [1.0, None, None, None, 3.0]
    stamps = np.array(["2024-01-01T00:00:00", "2024-01-01T00:01:40"], dtype="datetime64[s]")
    (point,) = timeline(stamps, np.array([2.0, 4.0]), buckets=1)
    assert (point["start"], point["end"], point["value"]) == (1704067200.0, 1704067300.0, 3.0)
    with pytest.raises(ValueError):
        timeline(np.array([1.0]), np.array([1.0]), buckets=0)


def test_worst_status():
    assert worst_status([]) == "ok"
    assert worst_status(["ok", "alert", "warn"]) == "alert"
