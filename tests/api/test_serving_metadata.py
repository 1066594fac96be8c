"""Metadata, V2 model metadata and the model card say which backend answers and how far from scikit-learn.

A tree model within 1e-9 serves through ONNX and shows its measured deviation; a model that
misses (SVR, converted to float only) serves with joblib (deviation 0.0, it is scikit-learn) and
shows why not ONNX. Bad input to either still gets the one JSON error shape.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from service.models import registry
from service.models.packaging import package_model


def numbers(n: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    return X, 3 * X["a"] - X["b"] ** 2 + rng.normal(0, 0.1, n)


@pytest.fixture
def client(make_app, artifact_root):
    X, y = numbers()
    for name, model in (("forest", RandomForestRegressor(20, random_state=0)),
                        ("kernel", make_pipeline(StandardScaler(), SVR()))):
        manifest = package_model(model.fit(X[:200], y[:200]), name, artifact_root, X[200:], y[200:])
        registry.record_packaged(artifact_root, manifest, actor="test")
    return make_app().test_client()


def test_version_metadata_states_backend_and_measured_deviation(client):
    forest = client.get("/v1/models/forest/versions/1").get_json()
    assert forest["backend"] == "onnx"
    serving = forest["serving"]
    assert serving["backend"] == "onnx" and serving["tolerance"] == 1e-9
    assert 0.0 <= serving["max_abs_diff"] <= 1e-9 and serving["onnx"]["exact"] is True
    assert forest["serving"]["max_abs_diff"] == serving["onnx"]["max_abs_diff"]

    kernel = client.get("/v1/models/kernel/versions/1").get_json()
    assert kernel["backend"] == "joblib"
    assert kernel["serving"]["max_abs_diff"] == 0.0  # scikit-learn itself answers
    assert kernel["serving"]["onnx"]["status"] == "failed" and kernel["serving"]["onnx"]["max_abs_diff"] > 1e-9
    assert kernel["serving"]["onnx"]["reason"].startswith("predictions differ from scikit-learn by up to ")
    listed = client.get("/v1/models/kernel").get_json()["versions"][0]
    assert listed["serving"] == kernel["serving"]


def test_v2_model_metadata_states_backend_and_deviation(client):
    forest = client.get("/v2/models/forest").get_json()["parameters"]
    assert forest["backend"] == "onnx" and 0.0 <= forest["max_abs_diff"] <= 1e-9
    kernel = client.get("/v2/models/kernel/versions/1").get_json()["parameters"]
    assert (kernel["backend"], kernel["max_abs_diff"]) == ("joblib", 0.0)


def test_the_model_card_states_backend_and_deviation(client):
    card = client.get("/v1/models/kernel/versions/1/card?format=md").get_data(as_text=True)
    line = next(line for line in card.splitlines() if line.startswith("- **Served by:**"))
    assert line.startswith("- **Served by:** joblib, largest deviation from scikit-learn 0 (ONNX failed: predictions differ")
    forest = client.get("/v1/models/forest/versions/1/card?format=md").get_data(as_text=True)
    assert "- **Served by:** onnx, largest deviation from scikit-learn " in forest
    page = client.get("/v1/models/kernel/versions/1/card").get_data(as_text=True)
    assert "Served by" in page and "largest deviation from scikit-learn" in page and "ONNX failed" in page


@pytest.mark.parametrize("name", ["forest", "kernel"])
def test_bad_input_gets_the_one_error_shape_on_either_backend(client, name):
    reply = client.post(f"/v1/models/{name}:predict", json={"instances": [{"a": "x", "b": 1.0, "c": 1.0, "d": 1.0}]})
    assert reply.status_code == 422
    error = reply.get_json()["error"]
    assert error["code"] == "validation_failed" and error["details"]["errors"][0]["field"].endswith("a")
    v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "a", "datatype": "FP64", "shape": [1],
                                                                    "data": [float("1e400")]}]})
    assert v2.status_code == 400 and set(v2.get_json()) == {"error"}
