"""Every wrong request gets a 4xx (every fault a 5xx) in the one error shape, never a trace: in-process."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from service.models import artifacts, registry
from service.models.packaging import package_model
from service.security.keys import create_key
from tests.faulty_models import TRIGGER, RaisingRegressor

CANARY = "ECHO-CANARY-7d1f"
DIABETES_ROW = {"age": 50, "sex": 1, "bmi": 25.1, "bp": 90.0, "s1": 180.0, "s2": 100.0, "s3": 45.0, "s4": 4.0,
                "s5": 4.6, "s6": 90.0}
PREDICT = "/v1/models/diabetes:predict"


def assert_error(response, status: int, code: str) -> dict:
    """Check the one error shape and return its ``error`` member."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("X-Request-ID")
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in text and CANARY not in text
    return body["error"]


def with_row(**changes) -> dict:
    return {"instances": [{**DIABETES_ROW, **changes}]}


def _unloadable_production(root) -> None:
    path = root / "diabetes" / "1" / artifacts.MODEL_FILE
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[data.index(b"\x00") + 2] ^= 0x01
    path.write_bytes(bytes(data))


def _package_a_model_that_raises(root) -> None:
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    manifest = package_model(RaisingRegressor().fit(X.to_numpy(), y), "fragile", root, X, y)
    registry.record_packaged(root, manifest, actor="test")


# One request per status the API answers with: (status, code, how the app is built, the request).
STATUSES = [
    (400, "invalid_json", {}, dict(method="POST", path=PREDICT, data=b'{"instances": [', content_type="application/json")),
    (401, "unauthorized", {"keys": True}, dict(method="POST", path=PREDICT, json=with_row())),
    (403, "forbidden", {"keys": True}, dict(method="POST", path=PREDICT, json=with_row(), headers="read")),
    (404, "model_not_found", {}, dict(method="POST", path="/v1/models/nope:predict", json=with_row())),
    (405, "method_not_allowed", {}, dict(method="GET", path=PREDICT)),
    (409, "change_refused", {"keys": True}, dict(method="POST", path="/v1/models/diabetes:promote", json={},
                                                 headers="admin")),
    (413, "payload_too_large", {"max_request_bytes": 1024}, dict(method="POST", path=PREDICT,
                                                                  json={"instances": [DIABETES_ROW] * 20})),
    (415, "unsupported_media_type", {}, dict(method="POST", path=PREDICT, data=b"{}", content_type="text/plain")),
    (429, "rate_limited", {"rate_limit_requests": 0.01, "rate_limit_requests_burst": 1, "twice": True},
     dict(method="POST", path=PREDICT, json=with_row())),
    (422, "validation_failed", {}, dict(method="POST", path=PREDICT, json=with_row(bmi=CANARY))),
    (503, "not_ready", {"broken": True}, dict(method="GET", path="/readyz")),
    (500, "prediction_failed", {"raising": True}, dict(method="POST", path="/v1/models/fragile:predict",
                                                        json={"instances": [[TRIGGER, 1.0]]})),
]


@pytest.mark.parametrize("status, code, setup, request_", STATUSES, ids=[str(s[0]) for s in STATUSES])
def test_every_error_status_has_the_one_shape(make_app, artifact_root, tmp_path, status, code, setup, request_):
    setup, request_ = dict(setup), dict(request_)
    headers = {}
    if setup.pop("keys", False):
        keys = tmp_path / "keys.json"
        headers = {"read": {"X-API-Key": create_key(keys, "dashboard", ["read"])},
                   "admin": {"X-API-Key": create_key(keys, "ops", ["admin"])}}
        setup["api_keys_file"] = keys
    if setup.pop("broken", False):
        _unloadable_production(artifact_root)
    if setup.pop("raising", False):
        _package_a_model_that_raises(artifact_root)
    twice = setup.pop("twice", False)  # the first request spends what the second would need
    client = make_app(**setup).test_client()
    request_["headers"] = headers.get(request_.get("headers"), {})
    if twice:
        client.open(request_["path"], **{k: v for k, v in request_.items() if k != "path"})
    assert_error(client.open(request_.pop("path"), **request_), status, code)


def test_the_statuses_above_are_every_status_an_error_can_have():
    """A new error status must join the parametrised test above."""
    from service import errors

    statuses = {cls.status for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.ServiceError)}
    assert statuses <= {s[0] for s in STATUSES}


@pytest.mark.parametrize(
    "body, field, message",
    [
        (with_row(age=4.7), "age", "Not a valid integer."),
        (with_row(bmi=True), "bmi", "Not a valid number."),
        (with_row(bmi=CANARY), "bmi", "Not a valid number."),
        (with_row(bmi=None), "bmi", "Field may not be null."),
        (with_row(sex=3), "sex", None),
        (with_row(age=-1), "age", None),
        (with_row(colour=CANARY), "colour", "Unknown field."),
    ],
)
def test_invalid_values_name_the_row_and_field(client, body, field, message):
    error = assert_error(client.post(PREDICT, json=body), 422, "validation_failed")
    first = error["details"]["errors"][0]
    assert first["row"] == 0 and first["field"] == field
    if message:
        assert first["messages"] == [message]


def test_missing_field_and_bad_second_row(client):
    row = dict(DIABETES_ROW)
    del row["s6"]
    error = assert_error(client.post(PREDICT, json={"instances": [DIABETES_ROW, row]}), 422, "validation_failed")
    assert error["details"]["errors"] == [{"row": 1, "field": "s6", "messages": ["Missing data for required field."]}]


def test_large_batch_errors_match_small_batch_errors(client):
    rows = [dict(DIABETES_ROW) for _ in range(500)]
    rows[321]["age"] = 4.7
    big = assert_error(client.post(PREDICT, json={"instances": rows}), 422, "validation_failed")
    small = assert_error(client.post(PREDICT, json=with_row(age=4.7)), 422, "validation_failed")
    assert big["details"]["errors"][0] == {**small["details"]["errors"][0], "row": 321}


def test_row_limit(make_app):
    client = make_app(max_batch_rows=5000).test_client()
    body = {"instances": [list(DIABETES_ROW.values())] * 5001}
    error = assert_error(client.post(PREDICT, json=body), 422, "validation_failed")
    assert "5000" in error["message"] + str(error["details"])
    assert client.post(PREDICT, json={"instances": body["instances"][:5000]}).status_code == 200


def test_probabilities_from_a_regressor(client):
    body = {**with_row(), "parameters": {"probabilities": True}}
    error = assert_error(client.post(PREDICT, json=body), 422, "validation_failed")
    assert error["details"]["errors"][0]["field"] == "parameters.probabilities"


@pytest.mark.parametrize(
    "raw",
    [b'{"instances": [{"age": NaN}]}', b'{"instances": [[Infinity]]}', b'{"instances": [[1e400]]}',
     b'{"instances": [' * 5000, b'{"instances": [[1, 2]', b"\xff\xfe", b'{"instances": "ECHO-CANARY-7d1f'],
)
def test_malformed_json_is_400(client, raw):
    assert_error(client.post(PREDICT, data=raw, content_type="application/json"), 400, "invalid_json")


def test_empty_body_and_wrong_envelope(client):
    assert_error(client.post(PREDICT, data=b"", content_type="application/json"), 400, "invalid_json")
    both = {"instances": [DIABETES_ROW], "inputs": {"age": [1]}}
    assert_error(client.post(PREDICT, json=both), 422, "validation_failed")
    extra = {"instances": [DIABETES_ROW], "signature_name": "x"}
    assert_error(client.post(PREDICT, json=extra), 422, "validation_failed")
    assert_error(client.post(PREDICT, json=[1, 2]), 422, "validation_failed")


def test_wrong_content_type_is_415(client):
    form = client.post(PREDICT, data="instances=1", content_type="application/x-www-form-urlencoded")
    assert_error(form, 415, "unsupported_media_type")
    assert_error(client.post(PREDICT, data=b"{}"), 415, "unsupported_media_type")


def test_unsupported_method_is_405_with_allow(client):
    error = assert_error(client.get(PREDICT), 405, "method_not_allowed")
    assert "POST" in error["details"]["allowed_methods"] and "GET" not in error["details"]["allowed_methods"]
    response = client.delete("/v1/models/diabetes")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_body_over_the_default_limit_is_413(client):
    body = b'{"instances": [' + b"[1.0]," * (3 * 1024 * 1024) + b"[1.0]]}"  # ~18 MiB > 16 MiB default
    assert_error(client.post(PREDICT, data=body, content_type="application/json"), 413, "payload_too_large")


@pytest.mark.parametrize(
    "path, code",
    [("/v1/models/nope:predict", "model_not_found"), ("/nowhere", "not_found"),
     ("/v1/models/..%2F..%2Fetc%2Fpasswd:predict", "not_found"), ("/v1/models/../../etc:predict", "not_found"),
     ("/v1/models/diabetes/versions/0:predict", "not_found"), ("/v1/models/Diabetes:predict", "not_found")],
)
def test_unknown_and_hostile_paths_are_404(client, path, code):
    assert_error(client.post(path, json=with_row()), 404, code)


def test_a_body_shorter_than_its_declared_length_is_a_400_in_the_one_shape(client):
    """The client went away mid-body (or lied about the length): nothing is predicted, nothing is half-read."""
    body = b'{"instances": [[1, 2]]}'
    response = client.post(PREDICT, data=body, content_type="application/json",
                           environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)})
    error = assert_error(response, 400, "bad_request")
    assert error["details"] == {"field": "Content-Length", "declared": len(body) + 10, "received": len(body)}
    assert error["message"].startswith(f"The body ended after {len(body)} of the {len(body) + 10} bytes")
