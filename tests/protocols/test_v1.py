"""The v1 codec: envelopes become protocol-neutral requests, answers become v1 bodies."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import ValidationFailed
from service.protocols import v1
from service.serving.inference import Answer, PredictRequest, Target
from service.serving.runtime import Prediction
from service.serving.validation import ValidatedBatch

TARGET = Target("breast-cancer", label="staging")


@pytest.mark.parametrize(("body", "layout", "data"), [
    ({"instances": [{"a": 1}, {"a": 2}]}, "records", [{"a": 1}, {"a": 2}]),
    ({"instances": [[1, 2], [3, 4]]}, "rows", [[1, 2], [3, 4]]),
    ({"inputs": {"a": [1, 2]}}, "columns", {"a": [1, 2]}),
])
def test_each_layout_decodes_to_one_request_shape(body, layout, data):
    request = v1.decode(body, TARGET, max_rows=10)
    assert request == PredictRequest(Target("breast-cancer", None, "staging", None), layout, data, False)


def test_parameters_set_probabilities_and_the_routing_key():
    body = {"instances": [[1]], "parameters": {"probabilities": True, "routing_key": "customer-7"}}
    request = v1.decode(body, TARGET, max_rows=10)
    assert request.probabilities is True and request.target.routing_key == "customer-7"
    assert v1.decode(body, TARGET, max_rows=10, routing_header="from-header").target.routing_key == "from-header"


@pytest.mark.parametrize(("body", "field"), [
    ({}, None),
    ({"instances": [[1]], "inputs": {"a": [1]}}, None),
    ({"instances": []}, "instances"),
    ({"instances": [[1], {"a": 1}]}, "instances"),
    ({"instances": [[1]] * 11}, "instances"),
    ({"instances": [[1]], "parameters": {"probabilities": "yes"}}, "parameters.probabilities"),
    ({"instances": [[1]], "extra": 1}, "extra"),
    ([1, 2], None),
])
def test_a_bad_envelope_is_one_422_naming_the_field(body, field):
    with pytest.raises(ValidationFailed) as exc:
        v1.decode(body, TARGET, max_rows=10)
    assert exc.value.status == 422
    assert exc.value.details["errors"][0]["field"] == field


ENVELOPES = [
    {"instances": [[1, 2]]}, {"instances": [{"a": 1}]}, {"instances": [[1]] * 10}, {"instances": [[1]] * 11},
    {"instances": []}, {"instances": [[1], {"a": 1}]}, {"instances": [1, 2]}, {"instances": [None]},
    {"instances": {"a": [1]}}, {"instances": "x"}, {"instances": None}, {"instances": [[1]], "parameters": {}},
    {"instances": [[1]], "extra": 1}, {"inputs": {"a": [1]}}, {"other": [[1]]}, {}, [1, 2], "x", None,
]


def _decoded(body):
    try:
        return v1.decode(body, TARGET, max_rows=10)
    except ValidationFailed as exc:
        return exc.message, exc.details


@pytest.mark.parametrize("body", ENVELOPES)
def test_a_plain_instances_body_decodes_as_the_schema_decodes_it(body, monkeypatch):
    fast = _decoded(body)
    monkeypatch.setattr(v1, "_plain_instances", lambda payload, max_rows: None)
    assert fast == _decoded(body)


def test_a_plain_instances_body_skips_the_schema(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the envelope schema ran for a plain body")

    monkeypatch.setattr(v1, "load_envelope", forbidden)
    assert v1.decode({"instances": [[1, 2]]}, TARGET, max_rows=10).layout == "rows"
    with pytest.raises(AssertionError):
        v1.decode({"instances": [[1, 2]], "parameters": {}}, TARGET, max_rows=10)


def _answer(predictions, probabilities=None, fallback_from=None):
    model = type("Loaded", (), {"version": 3})()
    request = PredictRequest(TARGET, "rows", [[1]], probabilities is not None)
    result = Prediction(np.asarray(predictions), probabilities, [0, 1] if probabilities is not None else None)
    return Answer(request, model, "label", ValidatedBatch({}, len(predictions)), result, ["id-0", "id-1"][:len(predictions)],
                  0.001, fallback_from, "error" if fallback_from else None)


def test_encode_gives_the_contract_shape():
    body = v1.encode(_answer([0, 1]))
    assert body["model"] == "breast-cancer" and body["version"] == 3 and body["ids"] == ["id-0", "id-1"]
    assert list(body["predictions"]) == [0, 1]
    assert "classes" not in body and "fallback" not in body


def test_encode_adds_classes_probabilities_and_fallback_when_present():
    body = v1.encode(_answer([1], probabilities=[[0.25, 0.75]], fallback_from=4))
    assert body["classes"] == [0, 1] and body["probabilities"] == [[0.25, 0.75]]
    assert body["fallback"] == {"from_version": 4, "reason": "error"}


def test_string_predictions_become_json_lists():
    assert v1.encode(_answer(["yes", "no"]))["predictions"] == ["yes", "no"]
