"""The pre-parse check: a body with more arrays and objects than the row limit allows is refused unparsed."""

from __future__ import annotations

import orjson
import pytest

from service.errors import TooManyElements
from service.protocols import container_budget, count_containers, parse_json

DIABETES_ROW = {"age": 50, "sex": 1, "bmi": 25.1, "bp": 90.0, "s1": 180.0, "s2": 100.0, "s3": 45.0, "s4": 4.0,
                "s5": 4.5, "s6": 90.0}


@pytest.mark.parametrize("body, count", [
    (b'{"instances": [[1, 2], [3, 4]]}', 4),
    (b'{"instances": [{"a": "[[{{"}, {"b": "]]}}"}]}', 4),  # brackets inside strings do not count
    (b'["a \\" [ {", {}]', 2),  # an escaped quote does not end the string
    (b'["\\\\", [], "\\\\\\"[" ]', 2),  # an escaped backslash does
    (b'[[[[[[]]]]]]', 6),  # nested
    (b'"unterminated [ {', 0),  # an open string runs to the end
    (b'["x\\', 1),  # even one that ends on a backslash
    (b'', 0),
])
def test_containers_are_counted_outside_strings(body, count):
    assert count_containers(body, budget=0) == count


def test_the_cheap_count_is_an_upper_bound_used_when_within_the_budget():
    body = b'["[[[[", []]'
    assert count_containers(body, budget=100) == 6  # brackets in strings included: still within
    assert count_containers(body, budget=1) == 2


def test_exactly_the_budget_passes_and_one_more_is_refused():
    budget = 100
    at_limit = orjson.dumps([[]] * (budget - 1))  # the outer array plus budget - 1 rows
    assert parse_json(at_limit, max_containers=budget, max_rows=10) == [[]] * (budget - 1)
    with pytest.raises(TooManyElements) as refused:
        parse_json(orjson.dumps([[]] * budget), max_containers=budget, max_rows=10)
    assert refused.value.status == 422
    assert refused.value.details["limit"] == "MAX_BATCH_ROWS" and refused.value.details["containers"] == budget + 1


def test_strings_full_of_brackets_never_refuse_a_body_within_the_budget():
    body = orjson.dumps({"instances": [{"name": "[{" * 1000}] * 10})
    assert parse_json(body, max_containers=container_budget(10, 1), max_rows=10)["instances"][0]["name"].startswith("[{")


def test_every_layout_within_the_row_limit_fits_its_budget():
    rows, width = 50, 30
    names = [f"f{i}" for i in range(width)]
    bodies = [
        {"instances": [dict.fromkeys(names, 1.0)] * rows, "parameters": {"probabilities": True}},
        {"instances": [[1.0] * width] * rows},
        {"inputs": {n: [1.0] * rows for n in names}},
        {"dataframe_split": {"columns": names, "index": list(range(rows)), "data": [[1.0] * width] * rows}},
    ]
    for body in bodies:
        assert count_containers(orjson.dumps(body), 0) <= container_budget(rows, width)
    per_feature = {"inputs": [{"name": n, "shape": [rows, 1], "datatype": "FP64", "parameters": {"content_type": "np"},
                               "data": [[1.0]] * rows} for n in names],
                   "outputs": [{"name": "predict", "parameters": {"binary_data": False}}], "parameters": {}}
    assert count_containers(orjson.dumps(per_feature), 0) <= container_budget(rows, width, per_feature=True)


# -- over HTTP ----------------------------------------------------------------------------------


def empty_rows(count: int) -> bytes:
    return b'{"instances": [' + b",".join([b"[]"] * count) + b"]}"


def test_the_predict_edge_over_http(make_app):
    app = make_app(max_batch_rows=5)
    budget = container_budget(5, 10)  # diabetes: 10 features
    client = app.test_client()
    rows = client.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW] * 5})
    assert rows.status_code == 200  # exactly MAX_BATCH_ROWS rows
    parsed = client.post("/v1/models/diabetes:predict", data=empty_rows(budget - 2), content_type="application/json")
    assert parsed.status_code == 422 and parsed.get_json()["error"]["code"] == "validation_failed"  # parsed, too many rows
    refused = client.post("/v1/models/diabetes:predict", data=empty_rows(budget), content_type="application/json")
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_elements" and error["details"]["max_rows"] == 5


@pytest.mark.parametrize("path, body", [
    ("/v1/models/diabetes:explain", empty_rows(5000)),
    ("/invocations", empty_rows(5000)),
    ("/v2/models/diabetes/infer", b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": ['
     + b",".join([b"[]"] * 50_000) + b"]}]}"),
])
def test_every_json_protocol_checks_before_parsing(make_app, path, body):
    client = make_app(max_batch_rows=5, default_model="diabetes").test_client()
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code in (400, 422)
    text = response.get_data(as_text=True)
    assert "too_many_elements" in text or "MAX_BATCH_ROWS" in text or "arrays and objects" in text


def test_feedback_bodies_are_checked_against_the_feedback_limit(client):
    from service.api.monitoring import MAX_FEEDBACK

    budget = container_budget(MAX_FEEDBACK, 0)
    too_many = b'{"feedback": [' + b",".join([b"{}"] * budget) + b"]}"
    refused = client.post("/v1/models/diabetes/feedback", data=too_many, content_type="application/json")
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"]["limit"] == "MAX_FEEDBACK"
    within = {"feedback": [{"id": f"nope-{i}", "label": 1.0} for i in range(MAX_FEEDBACK)]}
    answer = client.post("/v1/models/diabetes/feedback", json=within)
    assert answer.status_code == 200 and len(answer.get_json()["unknown"]) == MAX_FEEDBACK


def test_binary_tensor_bytes_after_the_json_header_are_not_counted(make_app):
    rows = 200
    client = make_app(max_batch_rows=rows).test_client()
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [rows, 10], "datatype": "FP64",
                                       "parameters": {"binary_data_size": rows * 10 * 8}}]})
    data = b"[" * (rows * 10 * 8)  # each float64 is eight '[' bytes: far more than the budget if counted
    assert data.count(b"[") > container_budget(rows, 10, per_feature=True)
    response = client.post("/v2/models/diabetes/infer", data=header + data,
                           headers={"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})
    assert "arrays and objects" not in response.get_data(as_text=True)
    assert response.status_code in (200, 400)  # the values themselves may be refused, never by the count


@pytest.mark.e2e
def test_a_16_mib_body_of_empty_rows_gets_its_422_from_real_gunicorn(demo_root, server_factory):
    server = server_factory(demo_root, WEB_CONCURRENCY="1", wait="/healthz")
    body = empty_rows((16 * 1024 * 1024 - 64) // 3)
    assert len(body) < 16 * 1024 * 1024
    response = server.post("/v1/models/diabetes:predict", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["error"]["code"] == "too_many_elements"
    assert server.get("/healthz").status_code == 200
