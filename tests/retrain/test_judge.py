"""Champion against challenger: the figures, their intervals, and each gate deciding in its turn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.models.evaluation import evaluate
from service.models.packaging import Threshold
from service.models.profile import profile_frame
from service.retrain import scores
from service.retrain.judge import Settings, compare, primary_metric

FEATURE_TYPES = {"type": "float", "required": True, "nullable": False}


def cancer():
    data = load_breast_cancer(as_frame=True)
    return data.data, data.target


def fitted(X, y):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)


def features_of(X, sensitive=()):
    return [{"name": c, **FEATURE_TYPES, "sensitive": c in sensitive} for c in X.columns]


def judge(champion, challenger, X, y, settings, thresholds=(), features=None):
    features = features or features_of(X)
    profile = {"features": profile_frame(X, features)}
    return compare(champion, challenger, X, y, "classification", settings, features=features,
                   thresholds=list(thresholds), champion_profile=profile, challenger_profile=profile)


def test_a_better_challenger_passes_every_gate_with_intervals_around_its_figures():
    X, y = cancer()
    good = fitted(X.iloc[:400], y.iloc[:400])
    two = list(X.columns[:2])
    weak = make_pipeline(ColumnTransformer([("two", StandardScaler(), two)]), LogisticRegression()).fit(
        X.iloc[:400], y.iloc[:400])  # two features only
    hold_X, hold_y = X.iloc[400:].reset_index(drop=True), y.iloc[400:].reset_index(drop=True)
    verdict = judge(weak, good, hold_X, hold_y, Settings("accuracy", min_gain=0.01, bootstrap=300),
                    [Threshold("accuracy", "min", 0.9)])
    assert verdict.passed and verdict.decided_by["name"] == "gain"
    assert [g["name"] for g in verdict.gates] == ["data", "gain", "packaging", "fairness", "data_quality"]
    for side in (verdict.champion, verdict.challenger):
        for figure in side.values():
            assert figure["low"] <= figure["value"] + 1e-9 and figure["value"] <= figure["high"] + 1e-9 or \
                np.isnan(figure["low"])
    assert verdict.gain["value"] == pytest.approx(verdict.challenger["accuracy"]["value"] - verdict.champion["accuracy"]["value"])
    assert 0 < verdict.gain["low"] <= verdict.gain["value"] <= verdict.gain["high"]
    again = judge(weak, good, hold_X, hold_y, Settings("accuracy", min_gain=0.01, bootstrap=300))
    assert again.gain == verdict.gain  # seeded: the same report every time


def test_each_gate_can_decide():
    X, y = cancer()
    model = fitted(X.iloc[:400], y.iloc[:400])
    hold_X, hold_y = X.iloc[400:].reset_index(drop=True), y.iloc[400:].reset_index(drop=True)
    few = judge(model, model, hold_X.head(10), hold_y.head(10), Settings("accuracy", min_holdout_rows=30))
    assert not few.passed and few.decided_by["name"] == "data" and "only 10" in few.decided_by["reason"]
    same = judge(model, model, hold_X, hold_y, Settings("accuracy", bootstrap=200))
    assert not same.passed and same.decided_by["name"] == "gain"  # no gain is no reason to change
    flipped = judge(_Flipped(model), model, hold_X, hold_y, Settings("accuracy", bootstrap=200),
                    [Threshold("roc_auc", "min", 0.9999)])
    assert [g["passed"] for g in flipped.gates][:3] == [True, True, False]
    assert flipped.decided_by["name"] == "packaging" and "roc_auc" in flipped.decided_by["reason"]


def test_a_threshold_the_hold_out_cannot_measure_fails_the_packaging_gate():
    X, y = cancer()
    model = fitted(X.iloc[:400], y.iloc[:400])
    ones = y.iloc[400:] == 1  # one class only: no ROC AUC
    hold_X, hold_y = X.iloc[400:][ones].reset_index(drop=True), y.iloc[400:][ones].reset_index(drop=True)
    verdict = judge(_Flipped(model), model, hold_X, hold_y, Settings("accuracy", bootstrap=100),
                    [Threshold("roc_auc", "min", 0.9), Threshold("cv.accuracy", "min", 0.99)])
    packaging = next(g for g in verdict.gates if g["name"] == "packaging")
    assert not packaging["passed"] and packaging["reason"] == "roc_auc cannot be measured on the hold-out (e.g. one class only)"


def test_the_fairness_gate_refuses_a_new_bias_alert():
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({"group": rng.integers(0, 2, n).astype(float), "x": rng.normal(size=n)})
    y = pd.Series((X["x"] > 0).astype(int))
    fair = fitted(X[["x"]].assign(group=0.0)[["group", "x"]], y)

    class Biased:  # right for group 0, always "1" for group 1
        classes_ = fair.classes_
        feature_names_in_ = fair.feature_names_in_

        def predict(self, data):
            return np.where(data["group"] == 1, 1, fair.predict(data))

        def predict_proba(self, data):
            return fair.predict_proba(data)

    features = features_of(X, sensitive=("group",))
    verdict = judge(_Flipped(fair, keep=True), Biased(), X, y, Settings("accuracy", bootstrap=200), features=features)
    fairness = next(g for g in verdict.gates if g["name"] == "fairness")
    assert not fairness["passed"] and "group" in fairness["reason"]


def test_the_bootstrap_scores_match_scikit_learn():
    X, y = cancer()
    model = fitted(X.iloc[:300], y.iloc[:300])
    hold_X, hold_y = X.iloc[300:], y.iloc[300:]
    fast = scores.score(hold_y.to_numpy(), model.predict(hold_X), model.predict_proba(hold_X), "classification", [0, 1])
    assert fast == pytest.approx(evaluate(model, hold_X, hold_y, "classification"), rel=1e-9)
    data = load_diabetes(as_frame=True)
    regressor = LinearRegression().fit(data.data.iloc[:300], data.target.iloc[:300])
    fast = scores.score(data.target.iloc[300:].to_numpy(), regressor.predict(data.data.iloc[300:]), None, "regression", None)
    assert fast == pytest.approx(evaluate(regressor, data.data.iloc[300:], data.target.iloc[300:], "regression"), rel=1e-9)


def test_the_primary_metric_is_the_first_quality_gate_metric():
    rules = {"metrics": {"thresholds": [{"metric": "cv.f1"}, {"metric": "roc_auc"}]}}
    assert primary_metric(rules, "classification") == "roc_auc"
    assert primary_metric({"metrics": {}}, "classification") == "accuracy"
    assert primary_metric({}, "regression") == "rmse"


class _Flipped:
    """A model whose answers are the other class (or, with ``keep``, the same model under another name)."""

    def __init__(self, model, keep: bool = False):
        self.model, self.keep = model, keep
        self.classes_, self.feature_names_in_ = model.classes_, model.feature_names_in_

    def predict(self, data):
        predicted = self.model.predict(data)
        return predicted if self.keep else 1 - predicted

    def predict_proba(self, data):
        proba = self.model.predict_proba(data)
        return proba if self.keep else proba[:, ::-1]
