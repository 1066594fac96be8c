"""End to end: every wrong request gets a 4xx in the one error shape, never a 500 or a trace."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

CANARY = "ECHO-CANARY-7d1f"
DIABETES_ROW = {"age": 50, "sex": 1, "bmi": 25.1, "bp": 90.0, "s1": 180.0, "s2": 100.0, "s3": 45.0, "s4": 4.0,
                "s5": 4.6, "s6": 90.0}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("X-Request-ID")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text and CANARY not in response.text
    return body["error"]


def with_row(**changes) -> dict:
    return {"instances": [{**DIABETES_ROW, **changes}]}


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
def test_invalid_values_name_the_row_and_field(demo_server, body, field, message):
    error = assert_error(demo_server.post("/v1/models/diabetes:predict", json=body), 422, "validation_failed")
    first = error["details"]["errors"][0]
    assert first["row"] == 0 and first["field"] == field
    if message:
        assert first["messages"] == [message]


def test_missing_field_and_bad_second_row(demo_server):
    row = dict(DIABETES_ROW)
    del row["s6"]
    error = assert_error(demo_server.post("/v1/models/diabetes:predict",
                                          json={"instances": [DIABETES_ROW, row]}), 422, "validation_failed")
    assert error["details"]["errors"] == [{"row": 1, "field": "s6", "messages": ["Missing data for required field."]}]


def test_large_batch_errors_match_small_batch_errors(demo_server):
    rows = [dict(DIABETES_ROW) for _ in range(500)]
    rows[321]["age"] = 4.7
    big = assert_error(demo_server.post("/v1/models/diabetes:predict", json={"instances": rows}), 422, "validation_failed")
    small = assert_error(demo_server.post("/v1/models/diabetes:predict", json=with_row(age=4.7)), 422, "validation_failed")
    assert big["details"]["errors"][0] == {**small["details"]["errors"][0], "row": 321}


def test_row_limit(demo_server):
    body = {"instances": [list(DIABETES_ROW.values())] * 5001}
    error = assert_error(demo_server.post("/v1/models/diabetes:predict", json=body), 422, "validation_failed")
    assert "5000" in error["message"] + str(error["details"])


def test_probabilities_from_a_regressor(demo_server):
    body = {**with_row(), "parameters": {"probabilities": True}}
    error = assert_error(demo_server.post("/v1/models/diabetes:predict", json=body), 422, "validation_failed")
    assert error["details"]["errors"][0]["field"] == "parameters.probabilities"


@pytest.mark.parametrize(
    "raw",
    [b'{"instances": [{"age": NaN}]}', b'{"instances": [[Infinity]]}', b'{"instances": [[1e400]]}',
     b'{"instances": [' * 5000, b'{"instances": [[1, 2]', b"\xff\xfe", b'{"instances": "ECHO-CANARY-7d1f'],
)
def test_malformed_json_is_400(demo_server, raw):
    response = demo_server.post("/v1/models/diabetes:predict", data=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")


def test_empty_body_and_wrong_envelope(demo_server):
    empty = demo_server.post("/v1/models/diabetes:predict", data=b"", headers={"Content-Type": "application/json"})
    assert_error(empty, 400, "invalid_json")
    both = {"instances": [DIABETES_ROW], "inputs": {"age": [1]}}
    assert_error(demo_server.post("/v1/models/diabetes:predict", json=both), 422, "validation_failed")
    extra = {"instances": [DIABETES_ROW], "signature_name": "x"}
    assert_error(demo_server.post("/v1/models/diabetes:predict", json=extra), 422, "validation_failed")
    assert_error(demo_server.post("/v1/models/diabetes:predict", json=[1, 2]), 422, "validation_failed")


def test_wrong_content_type_is_415(demo_server):
    response = demo_server.post("/v1/models/diabetes:predict", data="instances=1",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 415, "unsupported_media_type")
    assert_error(demo_server.post("/v1/models/diabetes:predict", data=b"{}"), 415, "unsupported_media_type")


def test_unsupported_method_is_405_with_allow(demo_server):
    error = assert_error(demo_server.get("/v1/models/diabetes:predict"), 405, "method_not_allowed")
    assert "POST" in error["details"]["allowed_methods"] and "GET" not in error["details"]["allowed_methods"]
    response = demo_server.session.delete(demo_server.base + "/v1/models/diabetes")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_body_over_the_limit_is_413(demo_server):
    body = b'{"instances": [' + b"[1.0]," * (3 * 1024 * 1024) + b"[1.0]]}"  # ~18 MiB > 16 MiB default
    response = demo_server.post("/v1/models/diabetes:predict", data=body, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "path, code",
    [("/v1/models/nope:predict", "model_not_found"), ("/nowhere", "not_found"),
     ("/v1/models/..%2F..%2Fetc%2Fpasswd:predict", "not_found"), ("/v1/models/../../etc:predict", "not_found"),
     ("/v1/models/diabetes/versions/0:predict", "not_found"), ("/v1/models/Diabetes:predict", "not_found")],
)
def test_unknown_and_hostile_paths_are_404(demo_server, path, code):
    assert_error(demo_server.post(path, json=with_row()), 404, code)
