"""NaN or infinity from a model reaches no client as ``null``: every protocol answers the error shape instead."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression

from service.models import registry
from service.models.comparison import version_figures
from service.models.packaging import package_model
from tests.faulty_models import INF_TRIGGER, NAN_TRIGGER, NEG_INF_TRIGGER, NonFiniteClassifier, NonFiniteRegressor, SumRegressor

X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
POISON = [[1.0, 1.0], [NAN_TRIGGER, 0.0], [INF_TRIGGER, 0.0], [NEG_INF_TRIGGER, 0.0]]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """"poisoned": v1 (production) answers NaN, inf and -inf for trigger rows, v2 never does;
    "proba": a classifier with NaN probabilities for trigger rows; "linear": a healthy
    LinearRegression whose fallback is v2. Packaged once."""
    root = tmp_path_factory.mktemp("poisoned") / "artifacts"
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    for model in (NonFiniteRegressor(), SumRegressor()):
        registry.record_packaged(root, package_model(model.fit(X.to_numpy(), y), "poisoned", root, X, y), actor="test")
    labels = pd.Series([0, 1, 0, 1])
    classifier = NonFiniteClassifier().fit(X.to_numpy(), labels)
    registry.record_packaged(root, package_model(classifier, "proba", root, X, labels), actor="test")
    for model in (LinearRegression(), SumRegressor()):  # "linear": healthy, trained on a + b, with a fallback
        registry.record_packaged(root, package_model(model.fit(X, X["a"] + X["b"]), "linear", root, X, X["a"] + X["b"]),
                                 actor="test")
    registry.set_rollout(root, "linear", fallback=2, actor="test")
    return root


@pytest.fixture
def root(template, tmp_path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "poisoned-artifacts"))


@pytest.fixture
def app(make_app, root):
    return make_app(artifacts_dir=root, default_model="poisoned")


@pytest.fixture
def client(app):
    return app.test_client()


def v2_body(rows, *, binary: bool = False, proba: bool = False) -> dict:
    outputs = [{"name": "predict_proba" if proba else "predict", "parameters": {"binary_data": binary}}]
    return {"inputs": [{"name": "x", "shape": [len(rows), 2], "datatype": "FP64", "data": rows}], "outputs": outputs}


REQUESTS = {
    "v1": ("/v1/models/poisoned:predict", {"instances": POISON}),
    "v1-columns": ("/v1/models/poisoned:predict", {"inputs": {"a": [r[0] for r in POISON], "b": [r[1] for r in POISON]}}),
    "v1-probabilities": ("/v1/models/proba:predict", {"instances": POISON, "parameters": {"probabilities": True}}),
    "v1-explain": ("/v1/models/poisoned:explain", {"instances": POISON}),
    "v2": ("/v2/models/poisoned/infer", v2_body(POISON)),
    "v2-binary": ("/v2/models/poisoned/infer", v2_body(POISON, binary=True)),
    "v2-probabilities": ("/v2/models/proba/infer", v2_body(POISON, proba=True)),
}


@pytest.mark.parametrize("path, body", REQUESTS.values(), ids=REQUESTS)
def test_every_native_protocol_answers_its_error_shape_not_null(client, path, body):
    answer = client.post(path, json=body)
    payload, text = answer.get_json(), answer.get_data(as_text=True)
    output = "probabilities" if "prob" in path + str(body) else "predictions"
    assert answer.status_code == 500 and set(payload) == {"error"}
    assert "777" not in text and "888" not in text  # the inputs are never echoed
    if path.startswith("/v2"):  # the Open Inference Protocol's shape: {"error": message}
        assert f"{output} for 3 of 4 rows" in payload["error"]
        return
    error = payload["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == "model_output_invalid"
    assert error["details"]["outputs"][output]["rows"] == 3 and f"{output} for 3 of 4 rows" in error["message"]
    assert error["details"]["row_positions"] == [1, 2, 3] and error["details"]["version"] == 1


def test_mlflow_answers_its_own_error_shape(client):
    answer = client.post("/invocations", json={"dataframe_split": {"columns": ["a", "b"], "data": POISON}})
    body = answer.get_json()
    assert answer.status_code == 500 and "predictions" not in body
    assert body["error_code"] == "INTERNAL_ERROR" and body["code"] == "model_output_invalid"
    assert body["details"]["outputs"]["predictions"]["rows"] == 3
    csv = client.post("/invocations", data=b"a,b\n1.0,1.0\n777.0,0.0\n", content_type="text/csv")
    assert csv.status_code == 500 and csv.get_json()["code"] == "model_output_invalid"


def test_finite_rows_of_the_same_models_still_answer(client):
    assert client.post("/v1/models/poisoned:predict", json={"instances": [[1.0, 1.0]]}).get_json()["predictions"] == [2.0]
    proba = client.post("/v1/models/proba:predict", json={"instances": POISON}).get_json()
    assert proba["predictions"] == [1, 1, 1, 0]  # labels are fine when probabilities are not asked for


def test_the_failure_is_counted_and_recorded_like_a_model_that_raises(app, client):
    before = _errors(client, "1")
    client.post("/v1/models/poisoned:predict", json={"instances": POISON}, headers={"X-Request-ID": "nan-request"})
    app.extensions["observer"].flush()
    assert _errors(client, "1") == before + 1
    rows = [dict(r) for r in app.extensions["store"].requests_since("poisoned", 0)]
    row = next(r for r in rows if r["request_id"] == "nan-request")
    assert (row["status"], row["error"], row["version"]) == (500, "model_output_invalid", 1)


def _errors(client, version: str, model: str = "poisoned", outcome: str = "error") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sklearn_server_prediction_requests_total" and sample.labels == {
                    "model": model, "version": version, "outcome": outcome}:
                return sample.value
    return 0.0


@pytest.fixture
def with_fallback(make_app, root):
    registry.set_rollout(root, "poisoned", fallback=2, actor="test")
    return make_app(artifacts_dir=root, default_model="poisoned").test_client()


FALLBACK_ANSWER = [2.0, NAN_TRIGGER, INF_TRIGGER, NEG_INF_TRIGGER]


@pytest.mark.parametrize("name", ["v1", "v1-columns", "v1-explain"])
def test_with_a_fallback_configured_the_fallback_answers_v1(with_fallback, name):
    path, body = REQUESTS[name]
    answer = with_fallback.post(path, json=body)
    payload = answer.get_json()
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"
    assert payload["predictions"] == FALLBACK_ANSWER and payload["fallback"] == {"from_version": 1, "reason": "error"}
    if name == "v1-explain":
        assert len(payload["explanations"]) == 4 and payload["explanation"]["method"] == "sampled_permutation"


def test_with_a_fallback_configured_the_fallback_answers_v2(with_fallback):
    answer = with_fallback.post(*REQUESTS["v2"][:1], json=REQUESTS["v2"][1])
    payload = answer.get_json()
    assert answer.status_code == 200 and payload["model_version"] == "2"
    assert payload["parameters"] == {"fallback_from_version": 1, "fallback_reason": "error"}
    assert payload["outputs"][0]["data"] == FALLBACK_ANSWER
    binary = with_fallback.post(REQUESTS["v2-binary"][0], json=REQUESTS["v2-binary"][1])
    header = int(binary.headers["Inference-Header-Content-Length"])
    assert binary.status_code == 200 and np.frombuffer(binary.get_data()[header:], "<f8").tolist() == FALLBACK_ANSWER


def test_mlflow_falls_back_too(with_fallback):
    answer = with_fallback.post("/invocations", json={"instances": POISON})
    assert answer.status_code == 200 and answer.get_json()["predictions"] == [2.0, NAN_TRIGGER, INF_TRIGGER,
                                                                            NEG_INF_TRIGGER]
    assert answer.headers["X-Model-Version"] == "2"


def test_explaining_finite_rows_of_such_a_model_works(client):
    answer = client.post("/v1/models/poisoned:explain", json={"instances": [[1.0, 1.0], [2.0, 0.5]]})
    payload = answer.get_json()
    assert answer.status_code == 200 and payload["predictions"] == [2.0, 2.5]
    assert len(payload["explanations"]) == 2 and payload["explanation"]["method"] == "sampled_permutation"


def test_the_openapi_document_names_the_code(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    predict = next(ops for path, ops in paths.items() if path.endswith(":predict") and "versions" not in path
                   and "labels" not in path)
    assert "model_output_invalid" in predict["post"]["responses"]["500"]["description"]


# -- a healthy model given inputs far outside its training data: a 4xx naming fields, no fallback ------

HUGE = [[1.0, 1.0], [1e308, 1e308]]
HUGE_REQUESTS = {
    "v1": ("/v1/models/linear:predict", {"instances": HUGE}),
    "v1-records": ("/v1/models/linear/versions/1:predict", {"instances": [{"a": r[0], "b": r[1]} for r in HUGE]}),
    "v1-explain": ("/v1/models/linear:explain", {"instances": HUGE}),
    "mlflow": ("/invocations", {"dataframe_split": {"columns": ["a", "b"], "data": HUGE}}),
}


@pytest.mark.parametrize("path, body", HUGE_REQUESTS.values(), ids=HUGE_REQUESTS)
def test_huge_inputs_are_a_422_naming_the_fields_and_no_fallback_answers(make_app, root, path, body):
    client = make_app(artifacts_dir=root, default_model="linear").test_client()
    answer = client.post(path, json=body)
    payload, text = answer.get_json(), answer.get_data(as_text=True)
    assert answer.status_code == 422 and "X-Model-Version" not in answer.headers
    assert "308" not in text  # the values are never echoed
    error = payload if path == "/invocations" else payload["error"]
    if path == "/invocations":
        assert payload["error_code"] == "BAD_REQUEST"
    assert error["code"] == "input_out_of_domain" and error["details"]["version"] == 1
    assert error["details"]["row_positions"] == [1] and error["details"]["fields"] == ["a", "b"]
    assert "no finite answer for 1 of 2 rows" in error["message"] and "a, b" in error["message"]


def test_v2_answers_its_400_naming_the_fields(make_app, root):
    client = make_app(artifacts_dir=root, default_model="linear").test_client()
    for body in (v2_body(HUGE), v2_body(HUGE, binary=True)):
        answer = client.post("/v2/models/linear/infer", json=body)
        assert answer.status_code == 400 and "308" not in answer.get_data(as_text=True)
        assert "no finite answer for 1 of 2 rows" in answer.get_json()["error"] and "(in a, b)" in answer.get_json()["error"]


def test_huge_inputs_count_as_client_errors_never_against_the_version(make_app, root):
    app = make_app(artifacts_dir=root, default_model="linear")
    client = app.test_client()
    errors_before, invalid_before = _errors(client, "1", "linear"), _errors(client, "1", "linear", "invalid")
    for i in range(3):
        client.post("/v1/models/linear:predict", json={"instances": HUGE}, headers={"X-Request-ID": f"huge-{i}"})
    app.extensions["observer"].flush()
    assert _errors(client, "1", "linear") == errors_before and _errors(client, "1", "linear", "invalid") == invalid_before + 3
    rows = [dict(r) for r in app.extensions["store"].requests_since("linear", 0)]
    assert {(r["status"], r["error"], r["version"]) for r in rows if r["request_id"].startswith("huge-")} == {
        (422, "input_out_of_domain", 1)}
    figures = version_figures(rows)
    assert figures[1]["errors"] == 0 and figures[1]["client_errors"] == 3 and figures[1]["fallbacks_from"] == 0
    assert 2 not in figures or figures[2]["requests"] == 0


def test_ordinary_rows_of_the_healthy_model_answer(make_app, root):
    client = make_app(artifacts_dir=root, default_model="linear").test_client()
    answer = client.post("/v1/models/linear:predict", json={"instances": [[1.0, 1.0], [1e6, 1e6]]})
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
    assert answer.get_json()["predictions"] == pytest.approx([2.0, 2e6])


def test_the_openapi_document_names_the_4xx(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "input_out_of_domain" in paths["/v1/models/{name}:predict"]["post"]["responses"]["422"]["description"]
    assert "input_out_of_domain" in paths["/v2/models/{name}/infer"]["post"]["responses"]["400"]["description"]
