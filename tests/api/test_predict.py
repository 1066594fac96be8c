"""Predictions for both demo models through the HTTP shell, in-process: layouts, routes, probes, request ids."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes


def rows_of(name: str, n: int, seed: int = 0) -> pd.DataFrame:
    if name == "breast-cancer":
        data = load_breast_cancer(as_frame=True).data
    else:
        data = load_diabetes(as_frame=True, scaled=False).data.astype({"age": "int64", "sex": "int64"})
    return data.sample(n, random_state=seed, replace=n > len(data)).reset_index(drop=True)


def in_process(root, name: str, frame: pd.DataFrame):
    model = joblib.load(root / name / "1" / "model.joblib")
    proba = model.predict_proba(frame) if hasattr(model, "predict_proba") else None
    return model.predict(frame), proba


def payloads(frame: pd.DataFrame) -> dict[str, dict]:
    records = json.loads(frame.to_json(orient="records"))
    return {
        "records": {"instances": records},
        "rows": {"instances": [list(r.values()) for r in records]},
        "columns": {"inputs": {c: [r[c] for r in records] for c in frame.columns}},
    }


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["models"] == {"breast-cancer": {"production": 1, "status": "AVAILABLE"},
                                          "diabetes": {"production": 1, "status": "AVAILABLE"}}


def test_list_and_describe_models(client):
    models = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert set(models) == {"breast-cancer", "diabetes"}
    assert models["breast-cancer"]["versions"] == [1]
    assert models["breast-cancer"]["labels"] == {"production": 1}
    detail = client.get("/v1/models/diabetes/versions/1").get_json()
    assert detail["status"] == "AVAILABLE" and detail["task"] == "regression" and detail["labels"] == ["production"]
    assert [f["name"] for f in detail["input"]["features"]][:3] == ["age", "sex", "bmi"]
    assert detail["metrics"]["cv"]["folds"] == 5
    assert "reference_profile" not in detail
    model = client.get("/v1/models/breast-cancer").get_json()
    assert model["versions"][0]["status"] == "AVAILABLE"


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
@pytest.mark.parametrize("layout", ["records", "rows", "columns"])
@pytest.mark.parametrize("n", [3, 200])  # below and above the vectorised threshold
def test_predictions_equal_in_process(client, artifact_root, name, layout, n):
    frame = rows_of(name, n)
    expected, expected_proba = in_process(artifact_root, name, frame)
    body = payloads(frame)[layout]
    if expected_proba is not None:
        body["parameters"] = {"probabilities": True}
    response = client.post(f"/v1/models/{name}:predict", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["model"] == name and answer["version"] == 1
    assert response.headers["X-Model-Version"] == "1"
    assert len(answer["ids"]) == n == len(set(answer["ids"]))
    if name == "breast-cancer":
        assert answer["predictions"] == expected.tolist()
        assert answer["classes"] == [0, 1]
        # served through ONNX Runtime: within the README's 1e-9 (absolute) of scikit-learn's answer
        np.testing.assert_allclose(answer["probabilities"], expected_proba, rtol=0, atol=1e-9)
    else:
        np.testing.assert_allclose(answer["predictions"], expected, rtol=0, atol=1e-9)
        assert "probabilities" not in answer


def test_pinned_version_and_label_routes(client):
    body = {"instances": payloads(rows_of("diabetes", 2))["records"]["instances"]}
    pinned = client.post("/v1/models/diabetes/versions/1:predict", json=body)
    labelled = client.post("/v1/models/diabetes/labels/production:predict", json=body)
    assert pinned.status_code == labelled.status_code == 200
    assert pinned.headers["X-Model-Version"] == labelled.headers["X-Model-Version"] == "1"
    assert pinned.get_json()["predictions"] == labelled.get_json()["predictions"]
    missing = client.post("/v1/models/diabetes/labels/staging:predict", json=body)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "label_not_found"
    absent = client.post("/v1/models/diabetes/versions/9:predict", json=body)
    assert absent.status_code == 404 and absent.get_json()["error"]["code"] == "version_not_found"


def test_request_id_is_kept_when_sane_and_replaced_otherwise(client):
    kept = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert kept.headers["X-Request-ID"] == "trace-42.a:b"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
    assert replaced.headers["X-Request-ID"] != "bad id <script>"
    assert len(replaced.headers["X-Request-ID"]) == 32
