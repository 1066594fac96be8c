"""Explanations add up to the value the server answered, within 1e-9, on the default backend.

The issue that set this bar: a RandomForest regressor served through a float32 ONNX graph
answered 42.961402893066406 while base + contributions gave 42.96140454888251. Served values now
come from a graph within 1e-9 of scikit-learn (or from scikit-learn), and TreeSHAP adds up to
scikit-learn's output, so the two meet.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.datasets import load_diabetes, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor

from service.models import registry
from service.models.packaging import package_model


def diabetes_forest():
    data = load_diabetes(as_frame=True, scaled=False)
    return RandomForestRegressor(n_estimators=50, random_state=0), data.data, data.target


def boosted_classifier():
    X, y = make_classification(n_samples=1200, n_features=8, n_informative=5, random_state=3)
    return HistGradientBoostingClassifier(random_state=0), pd.DataFrame(X, columns=[f"f{i}" for i in range(8)]), \
        pd.Series(y)


@pytest.fixture
def served(make_app, artifact_root):
    """Package both models as production versions and start an app on them."""
    for name, make in (("forest", diabetes_forest), ("boosted", boosted_classifier)):
        model, X, y = make()
        model.fit(X[:300 if name == "forest" else 900], y[:300 if name == "forest" else 900])
        holdout = slice(300, None) if name == "forest" else slice(900, None)
        manifest = package_model(model, name, artifact_root, X[holdout], y[holdout])
        registry.record_packaged(artifact_root, manifest, actor="test")
    return make_app().test_client()


def explain(client, name: str, frame: pd.DataFrame, **parameters: bool) -> dict:
    records = json.loads(frame.to_json(orient="records", double_precision=15))
    reply = client.post(f"/v1/models/{name}:explain", json={"instances": records, "parameters": parameters})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()


def test_a_random_forest_regressor_explanation_adds_up_to_the_served_prediction(served):
    metadata = served.get("/v1/models/forest/versions/1").get_json()
    assert metadata["backend"] == "onnx" and metadata["serving"]["max_abs_diff"] <= 1e-9
    _, X, _ = diabetes_forest()
    body = explain(served, "forest", X[300:340])
    assert body["explanation"]["method"] == "tree_shap" and body["explanation"]["output"] == "value"
    totals = [item["base"] + sum(item["contributions"].values()) for item in body["explanations"]]
    np.testing.assert_allclose(totals, body["predictions"], rtol=0, atol=1e-9)


def test_a_boosted_classifier_explanation_adds_up_to_the_served_probability(served):
    metadata = served.get("/v1/models/boosted/versions/1").get_json()
    assert metadata["backend"] == "onnx" and metadata["serving"]["max_abs_diff"] <= 1e-9
    _, X, _ = boosted_classifier()
    body = explain(served, "boosted", X[900:940], probabilities=True)
    assert body["explanation"]["output"] == "log_odds" and body["explanation"]["class"] == 1
    log_odds = np.array([item["base"] + sum(item["contributions"].values()) for item in body["explanations"]])
    # the served probability of class 1 is the link of the explained log-odds
    np.testing.assert_allclose(expit(log_odds), np.array(body["probabilities"])[:, 1], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.where(log_odds > 0, 1, 0), body["predictions"])
