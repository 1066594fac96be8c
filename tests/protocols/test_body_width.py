"""The width check: a body declaring far more columns than the model has features is refused before it is read.

Every layout that names its columns (a CSV header, ``dataframe_split.columns``, a record's keys,
an ``inputs`` mapping, V2 input tensors) is sized up against the model's feature count; a 2 MB
body of names answers its 4xx in well under a second where a 100 KB CSV header held a worker for
half a minute. A few unknown columns still reach validation, which names each one.
"""

from __future__ import annotations

import time

import orjson
import pytest

from service.errors import TooManyElements, ValidationFailed
from service.protocols import check_columns, column_budget, declared_columns, mlflow
from service.serving.inference import Target

MB2 = 2_000_000
CANCER_FEATURES, DIABETES_FEATURES = 30, 10
# Generous bounds: the fixed code takes a few hundredths of a CPU second for 2 MB, where a 100 KB
# CSV header took ~30 s before. CPU time is what a worker loses; wall time, on a shared machine,
# also counts other processes' turns, so it is only bounded loosely.
CPU_SECONDS = 1.0


def names(count: int, same: bool = False, width: int = 1) -> list[str]:
    return ["a"] * count if same else [f"c{i:0>{width}}" for i in range(count)]


def csv_header(size: int, same: bool = False) -> bytes:
    width = len(b"a,") if same else len(b"c999999,")
    return ",".join(names(size // width, same)).encode() + b"\n1\n"


def json_body(key: str, count: int) -> bytes:
    """A one-row body of ``count`` columns in the layout ``key`` names.

    Each ``inputs`` column is an array, and the pre-parse count refuses more arrays than rows
    and features need (``too_many_elements`` for MAX_BATCH_ROWS): long names keep 2 MB of them
    under that count, so it is the width check that answers.
    """
    columns = names(count, width=250 if key == "inputs" else 1)
    layouts = {"records": lambda: {"instances": [dict.fromkeys(columns, 0)]},
               "inputs": lambda: {"inputs": {c: [0] for c in columns}},
               "dataframe_split": lambda: {"dataframe_split": {"columns": columns, "data": [[0] * count]}},
               "dataframe_records": lambda: {"dataframe_records": [dict.fromkeys(columns, 0)]},
               "v2": lambda: {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [0]} for c in columns]}}
    return orjson.dumps(layouts[key]())


def count_for(key: str, size: int) -> int:
    """How many columns fill about ``size`` bytes in layout ``key``."""
    return size // len(json_body(key, 1000)) * 1000


# -- the check itself ---------------------------------------------------------------------------


def test_the_budget_is_twice_the_features_and_sixteen_more():
    assert column_budget(0) == 16 and column_budget(30) == 76
    check_columns(76, 30, "inputs")
    check_columns(10**9, None, "inputs")  # no model to size against: nothing is checked
    with pytest.raises(TooManyElements) as refused:
        check_columns(77, 30, "inputs")
    error = refused.value
    assert error.status == 422 and error.code == "too_many_elements"
    assert error.details["limit"] == "features"
    assert (error.details["features"], error.details["max_columns"], error.details["columns"]) == (30, 76, 77)
    assert error.details["errors"] == [{"row": None, "field": "inputs", "messages": [
        "Must declare at most 76 columns (the model has 30 features); found 77."]}]


@pytest.mark.parametrize(("data", "count"), [
    ({"a": [1], "b": [2]}, 2),  # columns
    ([{"a": 1}, {"a": 1, "b": 2, "c": 3}], 3),  # records: the widest
    ([[1, 2, 3]], 0),  # rows are checked against the schema's width
    ([{"a": 1}, [1]], 0),  # not a layout: the envelope check refuses it
    ([], 0), (None, 0), ("abc", 0),
])
def test_declared_columns_counts_keys_and_the_widest_record(data, count):
    assert declared_columns(data) == count


def test_a_csv_header_naming_a_column_twice_is_refused_before_pandas():
    with pytest.raises(ValidationFailed) as refused:
        mlflow.decode_csv(b"a,b,a\n1,2,3\n", Target("m"), max_rows=10)
    assert refused.value.details["errors"][0] == {"row": None, "field": "text/csv",
                                                   "messages": [mlflow.DUPLICATE_COLUMNS]}


@pytest.mark.parametrize("body", [
    b"\xef\xbb\xbfa,b\n1,2\n",  # a UTF-8 byte order mark
    b"\n  \na,b\n1,2\n",  # blank lines before the header, as pandas skips them
    b",a,b\n0,1,2\n",  # the index column to_csv() writes
    b'"a",b\r\n1,2\r\n',
])
def test_the_header_is_read_as_pandas_reads_it(body):
    request = mlflow.decode_csv(body, Target("m"), max_rows=10, features=2)
    assert list(request.data) == ["a", "b"]
    mlflow.decode_csv(b"a\n1\n", Target("m"), max_rows=10, features=0)  # 16 spare columns even for no features


def test_a_first_row_wider_than_the_header_counts_as_columns():
    """pandas makes the extra leading fields index levels: a few (R's row names) are read as before."""
    request = mlflow.decode_csv(b"a,b\nr1,1,2\nr2,3,4\n", Target("m"), max_rows=10, features=2)
    assert request.data == {"a": [1, 3], "b": [2, 4]}
    with pytest.raises(TooManyElements) as refused:
        mlflow.decode_csv(b"a,b\n" + b"1," * 1000 + b"1\n", Target("m"), max_rows=10, features=2)
    assert refused.value.details["columns"] == 1001


def test_a_header_field_past_the_csv_field_limit_is_a_400():
    with pytest.raises(mlflow.BadRequest) as refused:
        mlflow.decode_csv(b"a" * 200_000 + b"\n1\n", Target("m"), max_rows=10, features=1)
    assert refused.value.status == 400 and "could not be read" in refused.value.message


def test_pandas_reads_one_row_past_the_limit_at_most():
    with pytest.raises(ValidationFailed, match="at most 10 rows"):
        mlflow.decode_csv(b"a\n" + b"1\n" * 11 + b'"unterminated\n', Target("m"), max_rows=10)


# -- over HTTP, one per layout ------------------------------------------------------------------


class Fast:
    """Whether a request took less than the bound in CPU seconds of this process: a guard against
    cost that grows faster than the body (a quadratic parse of 2 MB takes tens of seconds), 20
    times what it takes; wall time is load's, not the code's (the timings: ``bench.parsing``)."""

    def __init__(self, cpu: float, wall: float) -> None:
        self.cpu, self.wall = cpu, wall

    def __bool__(self) -> bool:
        return self.cpu < CPU_SECONDS

    def __repr__(self) -> str:
        return f"Fast(cpu={self.cpu:.3f}, wall={self.wall:.3f})"


def post(client, path: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple:
    """Post with the test client; return the response and how fast it came (``Fast``)."""
    cpu, wall = time.process_time(), time.perf_counter()
    response = client.post(path, data=body, content_type=content_type, headers=headers or {})
    return response, Fast(time.process_time() - cpu, time.perf_counter() - wall)


@pytest.mark.parametrize("same", [True, False], ids=["one-name-repeated", "distinct-names"])
def test_a_2_mb_csv_header_is_refused_fast_in_mlflows_shape(make_app, same):
    client = make_app(default_model="breast-cancer").test_client()
    response, fast = post(client, "/invocations", csv_header(MB2, same), "text/csv")
    body = response.get_json()
    assert response.status_code == 422 and body["error_code"] == "BAD_REQUEST"
    assert body["code"] == "too_many_elements" and body["details"]["limit"] == "features"
    assert body["details"]["errors"][0]["field"] == "text/csv"
    assert body["details"]["features"] == CANCER_FEATURES and body["details"]["columns"] > 100_000
    assert fast


def test_a_2_mb_first_row_under_a_short_header_is_refused_fast(make_app):
    client = make_app(default_model="breast-cancer").test_client()
    response, fast = post(client, "/invocations", b"mean radius\n" + b"1," * (MB2 // 2 - 8) + b"1\n", "text/csv")
    body = response.get_json()
    assert response.status_code == 422 and body["code"] == "too_many_elements"
    assert body["details"]["errors"][0]["field"] == "text/csv" and body["details"]["columns"] > 900_000
    assert fast


@pytest.mark.parametrize(("path", "key", "field"), [
    ("/v1/models/breast-cancer:predict", "records", "instances"),
    ("/v1/models/breast-cancer:predict", "inputs", "inputs"),
    ("/v1/models/breast-cancer:explain", "records", "instances"),
    ("/invocations", "dataframe_split", "dataframe_split.columns"),
    ("/invocations", "dataframe_records", "dataframe_records"),
    ("/invocations", "records", "instances"),
    ("/invocations", "inputs", "inputs"),
])
def test_2_mb_of_json_columns_is_refused_fast_naming_the_field(make_app, path, key, field):
    client = make_app(default_model="breast-cancer").test_client()
    response, fast = post(client, path, json_body(key, count_for(key, MB2)), "application/json")
    body = response.get_json()
    error = body.get("error") if path.startswith("/v1") else body  # /invocations answers in MLflow's shape
    assert response.status_code == 422 and error["code"] == "too_many_elements", body
    assert error["details"]["limit"] == "features" and error["details"]["errors"][0]["field"] == field
    assert fast


def test_thousands_of_v2_tensors_are_refused_fast_in_the_v2_shape(make_app):
    client = make_app().test_client()
    body = json_body("v2", count_for("v2", MB2))
    response, fast = post(client, "/v2/models/breast-cancer/infer", body, "application/json")
    assert response.status_code == 400
    assert "more columns than the model has features" in response.get_json()["error"]
    assert "'inputs'" in response.get_json()["error"]
    assert fast


def test_thousands_of_binary_v2_tensor_headers_are_refused_fast(make_app):
    client = make_app().test_client()
    count = count_for("v2", MB2)
    header = orjson.dumps({"inputs": [{"name": c, "shape": [1], "datatype": "FP64",
                                       "parameters": {"binary_data_size": 8}} for c in names(count)]})
    response, fast = post(client, "/v2/models/breast-cancer/infer", header + b"\0" * (8 * count),
                             "application/octet-stream", {"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400 and "more columns than the model has features" in response.get_json()["error"]
    assert fast


def test_a_huge_v2_shape_is_refused_fast(make_app):
    client = make_app().test_client()
    shape = b",".join([b"1"] * (MB2 // 2))
    body = b'{"inputs": [{"name": "x", "datatype": "FP64", "data": [0], "shape": [' + shape + b"]}]}"
    response, fast = post(client, "/v2/models/breast-cancer/infer", body, "application/json")
    assert response.status_code == 400 and "inputs[0].shape" in response.get_json()["error"]
    assert fast


def test_up_to_the_budget_each_unknown_column_is_still_named(make_app):
    """Documented behaviour kept: a few extra columns are refused by validation, one error per name."""
    client = make_app().test_client()
    row = {"age": 50, "sex": 1, "bmi": 25.1, "bp": 90.0, "s1": 180.0, "s2": 100.0, "s3": 45.0, "s4": 4.0,
           "s5": 4.5, "s6": 90.0}
    budget = column_budget(DIABETES_FEATURES)
    extras = {f"extra{i}": 0 for i in range(budget - DIABETES_FEATURES)}
    within = client.post("/v1/models/diabetes:predict", json={"instances": [{**row, **extras}]}).get_json()["error"]
    assert within["code"] == "validation_failed" and within["details"]["error_count"] == len(extras)
    assert {e["field"] for e in within["details"]["errors"]} == set(extras)
    over = client.post("/v1/models/diabetes:predict", json={"instances": [{**row, **extras, "one_more": 0}]})
    assert over.status_code == 422 and over.get_json()["error"]["code"] == "too_many_elements"
    assert over.get_json()["error"]["details"]["columns"] == budget + 1


def test_the_model_is_resolved_before_the_body_is_sized(make_app):
    client = make_app(default_model="breast-cancer").test_client()
    wide = json_body("records", 1000)
    assert client.post("/v1/models/nope:predict", data=wide, content_type="application/json").status_code == 404
    pinned = client.post("/v1/models/diabetes/versions/9:predict", data=wide, content_type="application/json")
    assert pinned.get_json()["error"]["code"] == "version_not_found"


# -- objects full of unknown keys ---------------------------------------------------------------

MB4 = 4_000_000
UNKNOWN_KEYS = {f"k{i:07}": 0 for i in range(MB4 // len(b'"k0000000":0,'))}
V2_INPUT = {"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [0.0] * 30}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/models/breast-cancer:predict", {"instances": [[0]], **UNKNOWN_KEYS}, "k0000000"),
    ("/v1/models/breast-cancer:predict", {"instances": [[0]], "parameters": UNKNOWN_KEYS}, "parameters.k0000000"),
    ("/invocations", {"instances": [[0]], **UNKNOWN_KEYS}, "k0000000"),
    ("/invocations", {"dataframe_split": {"data": [[0]], **UNKNOWN_KEYS}}, "dataframe_split.k0000000"),
    ("/v2/models/breast-cancer/infer", {"inputs": [V2_INPUT], **UNKNOWN_KEYS}, "k0000000"),
    ("/v2/models/breast-cancer/infer", {"inputs": [{**V2_INPUT, **UNKNOWN_KEYS}]}, "inputs[0].k0000000"),
    ("/v2/models/breast-cancer/infer", {"inputs": [V2_INPUT], "outputs": [{"name": "predict", **UNKNOWN_KEYS}]},
     "outputs[0].k0000000"),
])
def test_4_mb_of_unknown_keys_is_counted_not_listed(make_app, path, body, field):
    client = make_app(default_model="breast-cancer").test_client()
    response, fast = post(client, path, orjson.dumps(body), "application/json")
    answer = response.get_json()
    if path.startswith("/v2"):  # the spec's shape: the message alone
        assert response.status_code == 400 and f"{len(UNKNOWN_KEYS)} errors" in answer["error"]
        assert f"field '{field}': Unknown field." in answer["error"]
    else:
        error = answer.get("error") if path.startswith("/v1") else answer
        assert response.status_code == 422 and error["code"] == "validation_failed"
        assert error["details"]["error_count"] == len(UNKNOWN_KEYS) and len(error["details"]["errors"]) == 50
        assert error["details"]["errors"][0] == {"row": None, "field": field, "messages": ["Unknown field."]}
    assert fast


def test_a_few_unknown_keys_are_still_named_with_the_other_problems():
    with pytest.raises(ValidationFailed) as refused:
        mlflow.decode_json({"dataframe_split": {"columns": ["a"]}, "extra": 1}, Target("m"), max_rows=10)
    assert {e["field"] for e in refused.value.details["errors"]} == {"extra", "dataframe_split.data"}


def test_a_dataframe_split_index_is_a_list_never_read_item_by_item():
    cpu = time.process_time()
    request = mlflow.decode_json({"dataframe_split": {"columns": ["a"], "data": [[1]], "index": [0] * 1_000_000}},
                                 Target("m"), max_rows=10)
    assert request.data == {"a": [1]} and time.process_time() - cpu < CPU_SECONDS / 4
    with pytest.raises(ValidationFailed) as refused:
        mlflow.decode_json({"dataframe_split": {"data": [[1]], "index": 7}}, Target("m"), max_rows=10)
    assert refused.value.details["errors"][0]["messages"] == ["Not a valid list."]
