import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

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
        {"status": "ok", "thresholds": {"warn": 0.1, "alert": 0.2, "alpha": 0.01, "tests": 0, "p_value": 0.01},
         "features": {}}


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
    # expected counts of 1-2.5 per cell: Fisher's exact test on the 2x2 tables, far from significant
    assert feature["test"] == {"parity": "fisher_exact", "opportunity": "fisher_exact"}
    assert feature["parity_pvalue"] == pytest.approx(stats.fisher_exact([[2, 2], [1, 3]]).pvalue)
    assert feature["opportunity_pvalue"] == pytest.approx(stats.fisher_exact([[2, 1], [1, 1]]).pvalue)
    assert result["thresholds"]["tests"] == 2 and result["thresholds"]["p_value"] == pytest.approx(0.005)
    # a parity gap above the alert threshold, but four rows a group are no evidence of anything
    assert feature["status"] == "ok" and result["status"] == "ok"
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


def rates(positives_a, positives_b, n):
    """Groups a and b of n rows each, with the given numbers predicted positive."""
    groups = ["a"] * n + ["b"] * n
    return groups, [1] * positives_a + [0] * (n - positives_a) + [1] * positives_b + [0] * (n - positives_b)


@pytest.mark.parametrize(("positives_in_b", "status"), [(500, "ok"), (400, "ok"), (350, "warn"), (300, "warn"), (200, "alert")])
def test_parity_status_boundaries(positives_in_b, status):
    # a predicts positive 500 in 1000; b gives gaps 0, 0.1 (exactly warn), 0.15, 0.2 (exactly alert), 0.3;
    # 1000 rows a group make every non-zero gap here significant (p < 1e-5), so size alone decides
    feature = report(*rates(500, positives_in_b, 1000))["features"]["group"]
    assert feature["demographic_parity_difference"] == pytest.approx((500 - positives_in_b) / 1000)
    assert feature["test"]["parity"] == "chi2_contingency"
    table = [[500, 500], [positives_in_b, 1000 - positives_in_b]]
    assert feature["parity_pvalue"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert feature["status"] == status


@pytest.mark.parametrize("n", [10, 30])
def test_a_wide_gap_without_evidence_is_ok(n):
    # gap 0.3 (above alert) in groups too small to tell it from noise: p = 0.37 (10 rows), 0.02 (30 rows)
    feature = report(*rates(n // 2, n // 2 - 3 * n // 10, n), min_group=10)["features"]["group"]
    assert feature["demographic_parity_difference"] == pytest.approx(0.3)
    assert 0.01 < feature["parity_pvalue"] < 0.5
    assert feature["status"] == "ok"


def test_a_significant_but_small_gap_is_ok():
    # 20000 rows a group: a gap of 0.05 is real (p ~ 1e-23) but below the warn threshold
    feature = report(*rates(10000, 9000, 20000))["features"]["group"]
    assert feature["parity_pvalue"] < 1e-20 and feature["status"] == "ok"


def test_custom_thresholds_are_frozen_and_checked():
    groups, predictions = rates(500, 400, 1000)
    assert report(groups, predictions, thresholds=BiasThresholds(warn=0.05, alert=0.5))["status"] == "warn"
    # gap 0.233 with p = 0.0074: an alert at alpha 0.01, no evidence at alpha 0.005
    groups, predictions = rates(28, 14, 60)
    assert report(groups, predictions)["features"]["group"]["parity_pvalue"] == pytest.approx(0.00737, abs=1e-5)
    assert report(groups, predictions)["status"] == "alert"
    assert report(groups, predictions, thresholds=BiasThresholds(alpha=0.005))["status"] == "ok"
    with pytest.raises(dataclasses.FrozenInstanceError):
        BiasThresholds().warn = 0.3
    with pytest.raises(ValueError):
        BiasThresholds(warn=0.3, alert=0.2)
    for alpha in (0, 1, -0.1):
        with pytest.raises(ValueError):
            BiasThresholds(alpha=alpha)


def test_bonferroni_over_every_gap_of_the_report():
    # the same p = 0.0074 gap alerts alone, but not once a second gap is tested (cut-off 0.01 / 2)
    groups, predictions = rates(28, 14, 60)
    alone = report(groups, predictions)
    assert alone["status"] == "alert" and alone["thresholds"]["tests"] == 1
    features = [*GROUP, {"name": "region", "type": "category", "sensitive": True}]
    columns = {"group": np.array(groups, dtype=object), "x": np.zeros(120), "region": np.array(["n", "s"] * 60)}
    both = bias_report(features, columns, np.array(predictions), None, "classification", [0, 1])
    assert both["thresholds"] == {"warn": 0.1, "alert": 0.2, "alpha": 0.01, "tests": 2, "p_value": 0.005}
    assert both["features"]["group"]["parity_pvalue"] == pytest.approx(alone["features"]["group"]["parity_pvalue"])
    assert both["features"]["region"]["parity_pvalue"] is not None
    assert both["status"] == "ok"


def test_sparse_two_by_two_tables_use_fisher_and_can_alert():
    # expected positives 4 a group: Fisher's exact test, p = 0.0046 < 0.01, gap 0.27
    feature = report(*rates(0, 8, 30))["features"]["group"]
    assert feature["test"]["parity"] == "fisher_exact"
    assert feature["parity_pvalue"] == pytest.approx(stats.fisher_exact([[0, 30], [8, 22]]).pvalue)
    assert feature["status"] == "alert"


def exact_rxc_pvalue(positives, n):
    """Fisher's exact p-value of a groups x {positive, not} table, n rows a group, by enumerating every table."""
    total = sum(positives)
    probability = {t: math.prod(math.comb(n, x) for x in t) / math.comb(n * len(positives), total)
                   for t in itertools.product(range(min(n, total) + 1), repeat=len(positives)) if sum(t) == total}
    observed = probability[tuple(positives)]
    return sum(p for p in probability.values() if p <= observed * (1 + 1e-7))


def test_sparse_tables_of_more_groups_use_a_seeded_monte_carlo_fisher_test():
    # three groups of 40 with 1 / 1 / 10 predicted positive: expected 4 a group, too few for chi-square
    groups = ["a"] * 40 + ["b"] * 40 + ["c"] * 40
    predictions = [1] + [0] * 39 + [1] + [0] * 39 + [1] * 10 + [0] * 30
    first, again = report(groups, predictions), report(groups, predictions)
    feature = first["features"]["group"]
    assert feature["test"]["parity"] == "fisher_exact_monte_carlo"
    assert feature["parity_pvalue"] == again["features"]["group"]["parity_pvalue"]  # seeded: reproducible
    exact = exact_rxc_pvalue((1, 1, 10), 40)
    assert 0.0005 < exact < 0.002
    assert feature["parity_pvalue"] == pytest.approx(exact, abs=0.0005)
    assert feature["demographic_parity_difference"] == pytest.approx(0.225) and feature["status"] == "alert"


def test_tables_with_one_outcome_only_give_p_one_without_warnings():
    # nobody predicted positive, every label positive: nothing differs; scipy must not be asked (it would warn or fail)
    groups = ["a"] * 40 + ["b"] * 40
    feature = report(groups, [0] * 80, [1] * 80)["features"]["group"]
    assert feature["demographic_parity_difference"] == 0.0 and feature["equal_opportunity_difference"] == 0.0
    assert feature["parity_pvalue"] == 1.0 and feature["opportunity_pvalue"] == 1.0
    assert feature["status"] == "ok"


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
    # every class tested on its own table, p-values multiplied by the classes tested (3)
    assert feature["test"] == {"parity": "fisher_exact per class, Bonferroni x3",
                               "opportunity": "fisher_exact per class, Bonferroni x3"}
    class_1 = stats.fisher_exact([[1, 3], [3, 1]]).pvalue
    assert feature["parity_pvalue_by_class"]["1"] == pytest.approx(min(1.0, 3 * class_1))
    assert feature["parity_pvalue"] == min(feature["parity_pvalue_by_class"].values())
    assert set(feature["opportunity_pvalue_by_class"]) == {"0", "1", "2"}
    assert feature["status"] == "ok"  # gaps of 0.5 and 1.0 between groups of four rows: no evidence


def test_multiclass_status_needs_gap_and_evidence_in_the_same_class():
    # class 0: gap 0.25 at 400 rows a group (significant); classes 1 and 2: gaps 0.125 each
    groups = ["a"] * 400 + ["b"] * 400
    predictions = [0] * 200 + [1] * 100 + [2] * 100 + [0] * 100 + [1] * 150 + [2] * 150
    feature = report(groups, predictions, classes=(0, 1, 2))["features"]["group"]
    assert feature["demographic_parity_by_class"] == pytest.approx({"0": 0.25, "1": 0.125, "2": 0.125})
    assert feature["test"]["parity"] == "chi2_contingency per class, Bonferroni x3"
    assert feature["parity_pvalue_by_class"]["0"] < 1e-10 and feature["status"] == "alert"
    # the same class 0 gap in groups of 40: the by-class p-values are corrected, no evidence survives
    small = report(["a"] * 40 + ["b"] * 40, predictions[::10], classes=(0, 1, 2))["features"]["group"]
    assert small["demographic_parity_by_class"]["0"] == pytest.approx(0.25)
    assert small["parity_pvalue"] > 0.01 and small["status"] == "ok"


def test_regression_mean_prediction_mae_and_standardized_gap():
    groups = ["a", "a", "b", "b"]
    predictions = [1.0, 3.0, 3.0, 5.0]  # means 2 and 4, window std = sqrt(2)
    result = report(groups, predictions, [1.0, 1.0, "3", None], task="regression", classes=None, min_group=2)
    feature = result["features"]["group"]
    assert feature["groups"]["a"] == {"count": 2, "mean_prediction": 2.0, "labelled": 2, "mae": 1.0}
    assert feature["groups"]["b"] == {"count": 2, "mean_prediction": 4.0, "labelled": 1, "mae": 0.0}
    assert feature["demographic_parity_difference"] == 2.0
    assert feature["standardized_parity_difference"] == pytest.approx(2 / np.sqrt(2))
    assert feature["equal_opportunity_difference"] is None and feature["opportunity_pvalue"] is None
    assert feature["test"] == {"parity": "kruskal", "opportunity": None}
    assert feature["parity_pvalue"] == pytest.approx(stats.kruskal([1.0, 3.0], [3.0, 5.0]).pvalue)
    assert feature["status"] == "ok"  # 1.4 prediction SDs apart, but two rows a group
    same = report(groups, [2.0, 2.0, 2.0, 2.0], task="regression", classes=None, min_group=2)["features"]["group"]
    assert same["standardized_parity_difference"] == 0.0 and same["parity_pvalue"] == 1.0 and same["status"] == "ok"


def test_regression_gap_alerts_with_evidence():
    rng = np.random.default_rng(0)
    groups = ["a"] * 100 + ["b"] * 100
    predictions = np.concatenate([rng.normal(0, 1, 100), rng.normal(1, 1, 100)])
    feature = report(groups, predictions, task="regression", classes=None)["features"]["group"]
    assert feature["standardized_parity_difference"] > 0.5 and feature["parity_pvalue"] < 1e-6
    assert feature["status"] == "alert"


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
    assert feature["demographic_parity_difference"] == 1.0
    # 4 x 2 table with expected counts of 1: Fisher's test by Monte Carlo; exactly, 6 of the 70
    # equally likely tables are as extreme as [[2, 0], [2, 0], [0, 2], [0, 2]]
    assert feature["test"]["parity"] == "fisher_exact_monte_carlo"
    assert feature["parity_pvalue"] == pytest.approx(6 / 70, abs=0.01)
    assert feature["status"] == "ok"
    larger = bias_report(features, {"age": np.arange(1.0, 81.0)}, np.repeat(predictions, 10), None, "classification",
                         [0, 1], min_group=2)
    assert larger["features"]["age"]["status"] == "alert"


def test_missing_column_reports_no_groups():
    features = [{"name": "age", "type": "float", "sensitive": True}]
    result = bias_report(features, {}, np.array([1, 0]), None, "classification", [0, 1])
    assert result["features"] == {"age": {
        "grouping": None, "groups": {}, "excluded_groups": [], "demographic_parity_difference": None,
        "equal_opportunity_difference": None, "parity_pvalue": None, "opportunity_pvalue": None,
        "test": {"parity": None, "opportunity": None}, "status": "ok"}}
    assert result["status"] == "ok" and result["thresholds"]["tests"] == 0


# Statistical behaviour: no bias must (almost) never alert, a real gap must.

TRIALS = 100
SENSITIVE = [{"name": "group", "type": "category", "sensitive": True},
             {"name": "age", "type": "float", "sensitive": True}]


def unbiased_window(rng, task):
    """2-5 groups of 30-200 rows, every group drawn from one distribution (and age unrelated too)."""
    k = int(rng.integers(2, 6))
    group = np.repeat(np.array([f"g{i}" for i in range(k)], dtype=object), rng.integers(30, 201, size=k))
    n = len(group)
    columns = {"group": group, "age": rng.normal(40, 12, n)}
    if task == "binary":
        rate = rng.uniform(0.05, 0.6)  # down to sparse tables that need Fisher's test
        return columns, (rng.random(n) < rate).astype(int), (rng.random(n) < 0.5).astype(int), "classification", [0, 1]
    if task == "multiclass":
        shares = rng.dirichlet([3.0, 3.0, 3.0])
        return columns, rng.choice(3, n, p=shares), rng.choice(3, n, p=shares), "classification", [0, 1, 2]
    return columns, rng.normal(100, 15, n), None, "regression", None


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_no_bias_rarely_alerts(task):
    rng = np.random.default_rng(4)
    statuses, old_rule = [], []
    for _ in range(TRIALS):
        columns, predictions, labels, kind, classes = unbiased_window(rng, task)
        result = bias_report(SENSITIVE, columns, predictions, labels, kind, classes)
        statuses.append(result["status"])
        size = "standardized_parity_difference" if kind == "regression" else "demographic_parity_difference"
        gaps = [f[size] for f in result["features"].values()] + [f["equal_opportunity_difference"]
                                                                  for f in result["features"].values()]
        old_rule.append(any(g is not None and g > 0.1 for g in gaps))  # the former rule: size alone
    false_alarms = statuses.count("alert") / TRIALS
    assert false_alarms <= 0.05, f"{task}: {false_alarms:.0%} of unbiased windows alert"
    assert (TRIALS - statuses.count("ok")) / TRIALS <= 0.05  # warnings need the same evidence
    assert sum(old_rule) / TRIALS >= 0.3  # while gaps above the warn threshold are everyday noise


def detection_rate(make_window):
    rng = np.random.default_rng(5)
    return sum(bias_report(*make_window(rng))["status"] == "alert" for _ in range(TRIALS)) / TRIALS


def test_a_real_parity_gap_alerts():
    # positive rates 0.3 and 0.6, 200 rows a group (with 150 rows the gap stays above 0.2 in about
    # 96 % of windows, too close to 95 % for a fixed bar; the test itself is significant every time)
    def window(rng):
        n = 200
        predictions = np.concatenate([rng.random(n) < 0.3, rng.random(n) < 0.6]).astype(int)
        return GROUP[:1], {"group": np.array(["a"] * n + ["b"] * n, dtype=object)}, predictions, None, "classification", [0, 1]
    assert detection_rate(window) >= 0.95


def test_a_real_opportunity_gap_alerts():
    # same prediction rate overall, but the true positive rate is 0.5 in one group and 0.8 in the other
    def window(rng):
        n = 300
        labels = (rng.random(2 * n) < 0.5).astype(int)
        recall = np.where(np.arange(2 * n) < n, 0.5, 0.8)
        predictions = np.where(labels == 1, rng.random(2 * n) < recall, rng.random(2 * n) < 0.2).astype(int)
        return GROUP[:1], {"group": np.array(["a"] * n + ["b"] * n, dtype=object)}, predictions, labels, "classification", [0, 1]
    assert detection_rate(window) >= 0.95


def test_a_real_multiclass_gap_alerts():
    def window(rng):
        n = 200
        predictions = np.concatenate([rng.choice(3, n, p=[0.6, 0.2, 0.2]), rng.choice(3, n, p=[0.3, 0.35, 0.35])])
        return GROUP[:1], {"group": np.array(["a"] * n + ["b"] * n, dtype=object)}, predictions, None, "classification", [0, 1, 2]
    assert detection_rate(window) >= 0.95


def test_a_real_regression_gap_alerts():
    # group means half a standard deviation apart, 250 rows a group (z of the difference about 5.6;
    # with 150 rows it is about 4.3 and the 1 % test misses roughly one window in twelve)
    def window(rng):
        n = 250
        predictions = np.concatenate([rng.normal(0, 1, n), rng.normal(0.5, 1, n)])
        return GROUP[:1], {"group": np.array(["a"] * n + ["b"] * n, dtype=object)}, predictions, None, "regression", None
    assert detection_rate(window) >= 0.95
