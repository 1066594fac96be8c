"""The parsing bench's bodies have the size asked for and the shape they are named after."""

import orjson
import pytest

from bench import parsing
from service.protocols import v2
from service.serving.inference import Target


@pytest.mark.parametrize("case", list(parsing.CASES))
def test_every_body_fills_its_size_and_no_more(case):
    for size in (10_000, 100_000):
        path, body, headers = parsing.body_of(case, size)
        assert 0.6 * size < len(body) <= size, case
        assert path in (parsing.V1, parsing.V2, parsing.MLFLOW) and headers["Content-Type"]


def test_the_wide_bodies_declare_thousands_of_columns():
    header = parsing.body_of("csv_same_name", 10_000)[1].split(b"\n")[0]
    assert set(header.split(b",")) == {b"a"} and header.count(b",") > 4000
    records = orjson.loads(parsing.body_of("mlflow_records", 10_000)[1])["dataframe_records"]
    assert len(records) == 1 and len(records[0]) > 1000
    split = orjson.loads(parsing.body_of("mlflow_split_columns", 10_000)[1])["dataframe_split"]
    assert len(split["columns"]) == len(split["data"][0]) > 500
    _, body, headers = parsing.body_of("v2_binary_inputs", 10_000)
    decoded = v2.decode(body, Target("m"), header_length=headers[v2.HEADER_LENGTH], max_rows=10, request_id="r")
    assert len(decoded.request.data) > 50 and decoded.request.layout == "columns"


def test_a_case_is_posted_and_its_answer_reported(make_app):
    result = parsing.post_case(make_app(default_model="breast-cancer").test_client(), "csv_same_name", 20_000)
    assert result["status"] == 422 and result["code"] == "too_many_elements"
    assert result["bytes"] <= 20_000 and result["cpu_seconds"] >= 0
