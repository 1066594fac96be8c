"""Parity measurement and its probes: what counts as a miss, and rows that sit exactly where rounding matters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from service.models import onnx_export, onnx_trees, parity, parity_probes


def features(*names: str, **extra) -> list[dict]:
    return [{"name": n, "type": "float", "nullable": False, **extra} for n in names]


def frame(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 100, n)})
    return X, X["a"] * 2 + (X["b"] > 50) + rng.normal(0, 0.1, n)


def test_measure_reports_each_output_its_largest_gap_and_where():
    kinds = np.array(["holdout", "threshold", "magnitude"], dtype=object)
    expected = parity.Answers(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]))
    got = parity.Answers(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.4, 0.6 + 3e-9], [0.2, 0.8]]))
    measured = parity.measure(expected, got, kinds, classification=True)
    assert measured["outputs"]["predictions"] == {"differ": 0, "max_abs_diff": 0.0, "where": None}
    assert measured["outputs"]["probabilities"]["where"] == "threshold"
    assert measured["max_abs_diff"] == pytest.approx(3e-9, rel=1e-3)
    assert measured["rows"] == {"holdout": 1, "magnitude": 1, "threshold": 1}
    assert parity.verdict(measured) == "probabilities differ from scikit-learn by up to 3e-09 (threshold rows; tolerance 1e-09)"
    assert not parity.passes({"parity": measured})


def test_a_different_class_or_a_lost_nan_is_a_miss_whatever_the_numbers():
    kinds = np.array(["holdout", "threshold"], dtype=object)
    classes = parity.measure(parity.Answers(np.array(["a", "b"])), parity.Answers(np.array(["a", "a"])), kinds, True)
    assert classes["max_abs_diff"] is None and parity.verdict(classes).startswith("predictions: the class differs")
    nan = parity.measure(parity.Answers(np.array([1.0, np.nan])), parity.Answers(np.array([1.0, 2.0])), kinds, False)
    assert nan["outputs"]["predictions"]["non_finite"] == 1 and not parity.passes({"parity": nan})
    same = parity.measure(parity.Answers(np.array([np.inf, np.nan])), parity.Answers(np.array([np.inf, np.nan])),
                          kinds, False)
    assert same["max_abs_diff"] == 0.0 and parity.verdict(same) is None


@pytest.mark.parametrize("report", [None, {}, {"status": "ok", "max_abs_diff": 0.0},
                                    {"parity": {"tolerance": 1e-6, "max_abs_diff": 0.0}},
                                    {"parity": {"tolerance": 1e-9, "max_abs_diff": None}},
                                    {"parity": {"tolerance": "1e-9", "max_abs_diff": 0.0}}])
def test_only_a_measurement_at_todays_tolerance_passes(report):
    assert not parity.passes(report)
    assert parity.passes({"parity": {"tolerance": 1e-9, "max_abs_diff": 1e-9}})


@pytest.mark.parametrize("float32", [True, False])
def test_threshold_probes_sit_where_the_model_itself_changes_branch(float32):
    """One row on each side of every split as the estimator computes it (float32 inputs for its own trees)."""
    X, y = frame()
    model = (DecisionTreeRegressor(max_depth=3, random_state=0) if float32
             else HistGradientBoostingRegressor(max_iter=3, random_state=0)).fit(X, y)
    probes = parity_probes.threshold_rows(model, X, features("a", "b"))
    columns, thresholds = parity_probes.splits(model)
    for column, threshold in zip(columns, thresholds, strict=True):
        values = probes[["a", "b"][column]].to_numpy()
        seen = values.astype(np.float32).astype(np.float64) if float32 else values
        at = values[seen <= threshold].max(initial=-np.inf)
        above = values[seen > threshold].min(initial=np.inf)
        assert np.nextafter(at, np.inf) == above, (column, threshold)  # adjacent doubles, either side


def test_threshold_probes_go_through_the_preprocessing():
    X, y = frame()
    model = make_pipeline(StandardScaler(), DecisionTreeRegressor(max_depth=2, random_state=0)).fit(X, y)
    scaler, tree = model[0], model[-1]
    probes = parity_probes.threshold_rows(model, X, features("a", "b"))
    root = tree.tree_.feature[0], tree.tree_.threshold[0]
    scaled = scaler.transform(probes)[:, root[0]].astype(np.float32).astype(np.float64)
    values = probes[["a", "b"][root[0]]].to_numpy()
    at, above = values[scaled <= root[1]].max(), values[scaled > root[1]].min()
    assert np.nextafter(at, np.inf) == above


def test_every_split_of_the_bench_forest_is_probed():
    """The README's "each split threshold" holds up to MAX_SPLITS; the bench's 100-tree forest is under it."""
    from bench import models as bench_models

    X, y = bench_models.synthetic_data()
    forest = bench_models.estimators()[bench_models.FOREST].fit(X[:3000], y[:3000])
    columns, _thresholds = parity_probes.splits(forest)
    assert len(columns) <= parity_probes.MAX_SPLITS == 20_000


def test_probes_stay_within_declared_bounds_and_integers_stay_integers():
    X = pd.DataFrame({"n": np.arange(50, dtype="int64"), "x": np.linspace(0, 1, 50)})
    spec = [{"name": "n", "type": "int", "nullable": True}, {"name": "x", "type": "float", "min": 0.0, "max": 2.0}]
    rows = parity_probes.magnitude_rows(X, spec)
    assert rows["x"].between(0.0, 2.0).all() and rows["n"].dtype == np.int64
    assert rows["n"].abs().max() == 49 * max(parity_probes.MAGNITUDES) == 49_000  # 1000 times the largest seen
    missing = parity_probes.missing_rows(X, spec)
    assert missing["n"].isna().all() and len(missing) == 1  # only the nullable feature


def test_a_tree_graph_refuses_what_it_cannot_reproduce():
    X, y = frame()
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=3).fit(X, y - y.min() + 1)
    with pytest.raises(onnx_trees.Unsupported, match="non-identity link"):
        onnx_trees.convert(poisson, [], "regression")
    assert not onnx_trees.is_tree_model(StandardScaler())


def test_a_tree_graph_of_a_stump_still_answers_exactly():
    X = pd.DataFrame({"a": np.zeros(20), "b": np.ones(20)})
    model = DecisionTreeRegressor().fit(X, np.full(20, 3.25))  # a single leaf: no split at all
    report = onnx_export.export(model, X, features("a", "b"), "regression").report
    assert (report["status"], report["graph"], report["max_abs_diff"]) == ("ok", "tree_ensemble", 0.0)
