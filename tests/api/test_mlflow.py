"""``/invocations`` and friends in-process, with bodies built by MLflow's own client helpers.

``dump_input_data`` is what ``mlflow``'s ``ScoringServerClient.invoke`` posts and
``convert_input_example_to_serving_input`` what ``mlflow.models`` logs as a model's serving
example; the answers must match the v1 route's for the same rows exactly.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from service.models import registry
from service.security.keys import create_key
from tests.builders import copy_version, wait_until

with warnings.catch_warnings():  # MLflow warns about optional extras at import; none concerns these helpers
    warnings.simplefilter("ignore")
    from mlflow.models.utils import convert_input_example_to_serving_input
    from mlflow.utils.proto_json_utils import dump_input_data

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).data.iloc[:6].reset_index(drop=True)


@pytest.fixture
def app(make_app):
    return make_app(default_model="breast-cancer")


def v1_answer(client, frame: pd.DataFrame, probabilities: bool = False) -> dict:
    body = {"instances": frame.to_dict(orient="records"), "parameters": {"probabilities": probabilities}}
    response = client.post("/v1/models/breast-cancer:predict", json=body)
    assert response.status_code == 200
    return response.get_json()


def bodies(frame: pd.DataFrame) -> dict[str, tuple[str | bytes, str]]:
    """The same rows in every format MLflow's scoring server reads, as MLflow's helpers write them."""
    return {
        "client dataframe_split": (dump_input_data(frame), "application/json"),
        "logged serving example": (serving_example(frame), "application/json"),
        "client ndarray inputs": (dump_input_data(frame.to_numpy()), "application/json"),
        "client records inputs": (dump_input_data(frame.to_dict(orient="records")), "application/json"),
        "dataframe_records": (json.dumps({"dataframe_records": frame.to_dict(orient="records")}), "application/json"),
        "instances": (json.dumps({"instances": frame.to_numpy().tolist()}), "application/json"),
        "inputs columns": (json.dumps({"inputs": frame.to_dict(orient="list")}), "application/json"),
        "csv with index": (frame.to_csv(), "text/csv"),
        "csv": (frame.to_csv(index=False), "text/csv; charset=utf-8"),
    }


FORMATS = ["client dataframe_split", "logged serving example", "client ndarray inputs", "client records inputs",
           "dataframe_records", "instances", "inputs columns", "csv with index", "csv"]


def serving_example(frame: pd.DataFrame) -> str:
    """MLflow's serving example for ``frame``; MLflow compares column names with a range, which pandas 3 warns of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
        return convert_input_example_to_serving_input(frame)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_answers_what_v1_answers(app, cancer, fmt):
    assert list(bodies(cancer)) == FORMATS
    client = app.test_client()
    data, content_type = bodies(cancer)[fmt]
    response = client.post("/invocations", data=data, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["predictions"] == v1_answer(client, cancer)["predictions"]
    assert len(body["ids"]) == len(cancer) and response.headers["X-Model-Version"] == "1"


def test_predictions_match_the_model_in_process_with_probabilities(app, cancer):
    client = app.test_client()
    model = app.extensions["catalog"].resolve("breast-cancer")
    expected = model.predict({name: cancer[name].to_numpy() for name in cancer.columns}, True)
    response = client.post("/invocations", data=dump_input_data(cancer, params={"probabilities": True}), headers=JSON)
    body = response.get_json()
    assert body["predictions"] == expected.predictions.tolist()
    assert body["classes"] == expected.classes
    assert np.array_equal(np.asarray(body["probabilities"]), np.asarray(expected.probabilities))


def test_a_regressor_from_csv(make_app):
    frame = load_diabetes(as_frame=True, scaled=False).data.iloc[:4]
    client = make_app(default_model="diabetes").test_client()
    body = client.post("/invocations", data=frame.to_csv(index=False), content_type="text/csv").get_json()
    v1 = client.post("/v1/models/diabetes:predict", json={"instances": frame.to_dict(orient="records")}).get_json()
    assert body["predictions"] == v1["predictions"]


@pytest.mark.parametrize(("data", "content_type", "status"), [
    ('{"dataframe_split": {"columns": ["mean radius"], "data": [[1.0]]}}', "application/json", 422),
    ('{"instances": [[1.0, 2.0]]}', "application/json", 422),
    ('{"dataframe_records": [{"mean radius": "big"}]}', "application/json", 422),
    ('{"instances": [[1.0]]', "application/json", 400),
    ("[]", "application/json", 422),
    ("mean radius\n1.0\n", "text/csv", 422),
    ("a,b\n1,\"2\n", "text/csv", 400),
    ('{"instances": [[1.0]]}', "application/json; charset=latin-1", 415),
    ("a=1", "application/x-www-form-urlencoded", 415),
])
def test_bad_input_is_a_4xx_in_mlflows_error_shape(app, data, content_type, status):
    response = app.test_client().post("/invocations", data=data, content_type=content_type)
    assert response.status_code == status
    body = response.get_json()
    assert body["error_code"] == "BAD_REQUEST" and body["message"] and "error" not in body


def test_too_many_rows_is_refused_in_every_format(make_app, cancer):
    client = make_app(default_model="breast-cancer", max_batch_rows=5).test_client()
    for fmt, (data, content_type) in bodies(cancer).items():
        response = client.post("/invocations", data=data, content_type=content_type)
        assert response.status_code == 422, fmt
        assert "at most 5 rows" in response.get_json()["message"], fmt


def test_without_a_default_model_invocations_says_which_setting(make_app, cancer):
    client = make_app().test_client()  # two demo models, no DEFAULT_MODEL
    response = client.post("/invocations", data=dump_input_data(cancer), headers=JSON)
    assert response.status_code == 404
    body = response.get_json()
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST" and "DEFAULT_MODEL" in body["message"]
    assert body["details"]["models"] == ["breast-cancer", "diabetes"]
    assert client.get("/ping").status_code == 503


def test_the_only_model_is_the_default(make_app, artifact_root, tmp_path, cancer):
    only = tmp_path / "only"
    shutil.copytree(artifact_root / "breast-cancer", only / "breast-cancer")
    client = make_app(artifacts_dir=only).test_client()
    assert client.post("/invocations", data=dump_input_data(cancer), headers=JSON).status_code == 200
    assert client.get("/version").get_json() == {"model": "breast-cancer", "version": 1}


def test_ping_and_health_answer_like_mlflow(app):
    client = app.test_client()
    for path in ("/ping", "/health"):
        response = client.get(path)
        assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_the_canary_and_labels_apply(make_app, artifact_root, cancer):
    copy_version(artifact_root, "breast-cancer", 1, 2)
    registry.set_rollout(artifact_root, "breast-cancer", canary={"version": 2, "weight": 100}, actor="test")
    client = make_app(default_model="breast-cancer").test_client()
    response = client.post("/invocations", data=dump_input_data(cancer), headers=JSON)
    assert response.headers["X-Model-Version"] == "2"
    assert client.get("/version").get_json()["version"] == 1  # production, which unqualified requests fall back to


def test_predictions_are_logged_and_take_feedback(app, cancer):
    client = app.test_client()
    body = client.post("/invocations", data=dump_input_data(cancer), headers=JSON).get_json()
    feedback = {"feedback": [{"id": i, "label": p} for i, p in zip(body["ids"], body["predictions"], strict=True)]}

    def accepted():  # the answer is logged just after the response: feedback waits for it
        return client.post("/v1/models/breast-cancer/feedback", json=feedback).get_json()["accepted"] or None

    assert wait_until(accepted, timeout=10, message="feedback accepted") == len(cancer)


def test_keys_on_needs_the_predict_scope_and_says_so_in_mlflows_shape(make_app, tmp_path, cancer):
    path = tmp_path / "keys.json"
    keys = {scope: create_key(path, f"only-{scope}", [scope]) for scope in ("predict", "read")}
    client = make_app(default_model="breast-cancer", api_keys_file=path).test_client()
    data = dump_input_data(cancer)
    refused = client.post("/invocations", data=data, headers=JSON)
    assert refused.status_code == 401 and refused.get_json()["error_code"] == "UNAUTHENTICATED"
    assert "Bearer" in refused.headers.getlist("WWW-Authenticate")[0]
    wrong = client.post("/invocations", data=data, headers={**JSON, "X-API-Key": keys["read"]})
    assert wrong.status_code == 403 and wrong.get_json()["error_code"] == "PERMISSION_DENIED"
    assert client.post("/invocations", data=data, headers={**JSON, "X-API-Key": keys["predict"]}).status_code == 200
    assert client.get("/ping").status_code == 200  # a probe carries no key
    assert client.get("/version").status_code == 401
    assert client.get("/version", headers={"X-API-Key": keys["read"]}).status_code == 200


def test_a_body_over_the_limit_is_a_413_in_mlflows_shape(make_app, cancer):
    client = make_app(default_model="breast-cancer", max_request_bytes=2_000).test_client()
    big = pd.concat([cancer] * 5)
    for data, content_type in ((big.to_csv(index=False), "text/csv"), (dump_input_data(big), "application/json")):
        response = client.post("/invocations", data=data, content_type=content_type)
        assert response.status_code == 413
        assert response.get_json()["error_code"] == "BAD_REQUEST" and response.get_json()["code"] == "payload_too_large"


def test_csv_codes_of_a_personal_data_category_stay_text(make_app, tmp_path):
    """A pii category is stored only as hashes: its CSV cells must still be read as text ("007", not 7)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from service.models.packaging import package_model

    codes = ["007", "010", "123"] * 4
    X = pd.DataFrame({"branch": codes})
    y = pd.Series([0, 1, 1] * 4)
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(X, y)
    root = tmp_path / "artifacts"
    manifest = package_model(model, "branches", root, X, y, overrides={"branch": {"pii": True}})
    (feature,) = manifest["input"]["features"]
    assert feature["categories"] is None and feature["category_sha256"]["text"] is True
    registry.set_label(root, "branches", "production", manifest["version"], actor="test")
    client = make_app(artifacts_dir=root, default_model="branches").test_client()
    answer = client.post("/invocations", data="branch\n007\n123\n", content_type="text/csv")
    assert answer.status_code == 200, answer.get_json()
    v1 = client.post("/v1/models/branches:predict", json={"instances": [{"branch": "007"}, {"branch": "123"}]})
    assert answer.get_json()["predictions"] == v1.get_json()["predictions"]
