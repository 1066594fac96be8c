"""The MLflow codec: every body format MLflow's scoring server takes becomes one request shape."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import BadRequest, ModelNotFound, ValidationFailed
from service.protocols import mlflow
from service.serving.inference import Answer, PredictRequest, Target
from service.serving.runtime import Prediction
from service.serving.validation import ValidatedBatch

TARGET = Target("breast-cancer")


@pytest.mark.parametrize(("body", "layout", "data"), [
    ({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}}, "columns", {"a": [1, 2], "b": ["x", "y"]}),
    ({"dataframe_split": {"columns": ["a"], "data": [[1]], "index": [7]}}, "columns", {"a": [1]}),
    ({"dataframe_split": {"data": [[1, 2]]}}, "rows", [[1, 2]]),
    ({"dataframe_records": [{"a": 1}, {"a": 2}]}, "records", [{"a": 1}, {"a": 2}]),
    ({"instances": [{"a": 1}]}, "records", [{"a": 1}]),
    ({"instances": [[1, 2]]}, "rows", [[1, 2]]),
    ({"inputs": {"a": [1, 2]}}, "columns", {"a": [1, 2]}),
    ({"inputs": [[1, 2]]}, "rows", [[1, 2]]),
    ({"inputs": [{"a": 1}]}, "records", [{"a": 1}]),
])
def test_each_format_decodes_to_one_request_shape(body, layout, data):
    assert mlflow.decode_json(body, TARGET, max_rows=10) == PredictRequest(TARGET, layout, data, False)


def test_params_we_use_are_read_and_others_ignored_as_mlflow_does():
    body = {"instances": [[1]], "params": {"probabilities": True, "routing_key": "customer-7", "temperature": 0.1}}
    request = mlflow.decode_json(body, TARGET, max_rows=10)
    assert request.probabilities is True and request.target.routing_key == "customer-7"
    assert mlflow.decode_json(body, TARGET, max_rows=10, routing_header="h").target.routing_key == "h"


@pytest.mark.parametrize(("body", "field"), [
    ({}, None),
    ([{"a": 1}], None),
    ({"instances": [[1]], "inputs": [[1]]}, None),
    ({"instances": []}, "instances"),
    ({"dataframe_records": [[1]]}, "dataframe_records"),
    ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, "dataframe_split.data"),
    ({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}, "dataframe_split.columns"),
    ({"dataframe_split": {"columns": ["a"], "data": [1]}}, "dataframe_split.data"),
    ({"dataframe_split": {"columns": ["a"]}}, "dataframe_split.data"),
    ({"dataframe_split": {"columns": ["a"], "data": [[1]], "orient": "x"}}, "dataframe_split.orient"),
    ({"inputs": {}}, "inputs"),
    ({"inputs": "a"}, "inputs"),
    ({"instances": [[1]] * 11}, "instances"),
    ({"dataframe_split": {"columns": ["a"], "data": [[1]] * 11}}, "dataframe_split"),
    ({"inputs": {"a": [1] * 11}}, "inputs"),
    ({"instances": [[1]], "params": {"probabilities": "yes"}}, "params.probabilities"),
    ({"instances": [[1]], "extra": 1}, "extra"),
])
def test_a_bad_body_is_one_422_naming_the_field(body, field):
    with pytest.raises(ValidationFailed) as exc:
        mlflow.decode_json(body, TARGET, max_rows=10)
    assert exc.value.status == 422
    assert exc.value.details["errors"][0]["field"] == field


def test_csv_reads_as_pandas_writes_it_index_column_and_all():
    body = b",mean radius,code,flag\n0,1.5,007,True\n1,,12,False\n"
    request = mlflow.decode_csv(body, TARGET, max_rows=10, text_columns=["code"], routing_header="k")
    assert request.layout == "columns" and request.target.routing_key == "k"
    assert request.data == {"mean radius": [1.5, None], "code": ["007", "12"], "flag": [True, False]}
    assert [type(v) for v in request.data["mean radius"]] == [float, type(None)]
    assert mlflow.decode_csv(b"a\n7\n", TARGET, max_rows=10).data == {"a": [7]}


@pytest.mark.parametrize(("body", "error"), [
    (b"", BadRequest),
    (b"\xff\xfe\n1\n", BadRequest),
    (b'a,b\n1,"2\n', BadRequest),
    (b"a,b\n", ValidationFailed),
    (b"a\n" + b"1\n" * 11, ValidationFailed),
])
def test_a_bad_csv_body_is_a_4xx(body, error):
    with pytest.raises(error) as exc:
        mlflow.decode_csv(body, TARGET, max_rows=10)
    assert 400 <= exc.value.status < 500


def test_the_default_model_is_the_setting_else_the_only_model():
    assert mlflow.default_model("diabetes", ["breast-cancer", "diabetes"]) == "diabetes"
    assert mlflow.default_model(None, ["diabetes"]) == "diabetes"
    for names in ([], ["diabetes", "breast-cancer"]):
        with pytest.raises(ModelNotFound, match="set DEFAULT_MODEL") as exc:
            mlflow.default_model(None, names)
        assert exc.value.details["models"] == sorted(names)


def _answer(predictions, probabilities=None):
    model = type("Loaded", (), {"version": 3})()
    request = PredictRequest(TARGET, "rows", [[1]], probabilities is not None)
    result = Prediction(np.asarray(predictions), probabilities, [0, 1] if probabilities is not None else None)
    return Answer(request, model, "production", ValidatedBatch({}, len(predictions)), result, ["i-0", "i-1"], 0.001)


def test_encode_answers_predictions_first_as_mlflow_does():
    body = mlflow.encode(_answer(["no", "yes"]))
    assert list(body) == ["predictions", "ids"] and body["predictions"] == ["no", "yes"]
    body = mlflow.encode(_answer([0, 1], [[0.9, 0.1], [0.2, 0.8]]))
    assert body["classes"] == [0, 1] and body["probabilities"] == [[0.9, 0.1], [0.2, 0.8]]


@pytest.mark.parametrize(("status", "code"), [(400, "BAD_REQUEST"), (422, "BAD_REQUEST"), (401, "UNAUTHENTICATED"),
                                              (404, "RESOURCE_DOES_NOT_EXIST"), (503, "TEMPORARILY_UNAVAILABLE"),
                                              (500, "INTERNAL_ERROR"), (429, "BAD_REQUEST"), (502, "INTERNAL_ERROR")])
def test_errors_take_mlflows_shape(status, code):
    body = mlflow.error_body(status, "why", "our_code", {"x": 1})
    assert body == {"error_code": code, "message": "why", "code": "our_code", "details": {"x": 1}}
