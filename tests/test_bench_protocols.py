"""The bench's protocol bodies carry the rows the v1 body carries, and wrk is told the headers."""

import numpy as np
import orjson
import pandas as pd
import pytest

from bench import load, protocols
from service.protocols import mlflow, v2
from service.serving.inference import Target

ROWS = pd.DataFrame({"a": [1.5, -2.25, 3.0], "b": [0.0, 1e-300, 7.0], "c": [4.0, 5.0, 6.0]})


def test_the_v2_binary_body_decodes_to_the_same_rows():
    body, headers = protocols.v2_binary_body(ROWS)
    assert headers["Content-Type"] == v2.BINARY_TYPE
    decoded = v2.decode(body, Target("m"), header_length=headers[v2.HEADER_LENGTH], max_rows=100, request_id="r")
    assert decoded.request.layout == "matrix"
    np.testing.assert_array_equal(decoded.request.data, ROWS.to_numpy())
    assert decoded.request.data.dtype == np.float64


def test_the_v2_json_body_decodes_to_the_same_rows():
    decoded = v2.decode(protocols.v2_json_body(ROWS), Target("m"), header_length=None, max_rows=100, request_id="r")
    np.testing.assert_array_equal(np.asarray(decoded.request.data, dtype=np.float64), ROWS.to_numpy())


def test_the_mlflow_body_is_a_dataframe_split_of_the_same_rows():
    split = orjson.loads(protocols.mlflow_body(ROWS))["dataframe_split"]
    assert split == {"columns": ["a", "b", "c"], "data": ROWS.to_numpy().tolist()}
    decoded = mlflow.decode_json(orjson.loads(protocols.mlflow_body(ROWS)), Target("m"), max_rows=100)
    assert decoded.data == {name: ROWS[name].tolist() for name in ROWS.columns}


def test_each_batch_goes_out_in_four_protocols_on_their_routes():
    requests = protocols.requests_for("breast-cancer", ROWS)
    assert [(r.protocol, r.path) for r in requests] == [
        (protocols.V1, "/v1/models/breast-cancer:predict"), (protocols.V2_JSON, "/v2/models/breast-cancer/infer"),
        (protocols.V2_BINARY, "/v2/models/breast-cancer/infer"), (protocols.MLFLOW, "/invocations")]
    assert all(r.rows == 3 for r in requests)
    assert orjson.loads(requests[0].body) == {"instances": ROWS.to_numpy().tolist()}


@pytest.mark.parametrize(("answer", "rows"), [
    ({"predictions": [0, 1], "ids": ["x", "y"]}, 2),
    ({"outputs": [{"name": "ids", "shape": [3]}, {"name": "predict", "shape": [3], "data": [1, 1, 0]}]}, 3)])
def test_answered_rows_reads_v1_mlflow_and_v2_answers(answer, rows):
    request = protocols.requests_for("m", ROWS)[0]
    assert protocols.answered_rows(request, orjson.dumps(answer)) == rows


def test_wrk_gets_the_headers_after_the_body_file_and_the_script_sets_them(tmp_path):
    _, headers = protocols.v2_binary_body(ROWS)
    args = load.header_args(headers)
    assert args == [f"Content-Type: {v2.BINARY_TYPE}", f"{v2.HEADER_LENGTH}: {headers[v2.HEADER_LENGTH]}"]
    script = load.write_script(tmp_path).read_text()
    assert "for i = 2, #args do" in script and "wrk.headers[name] = value" in script
    assert load.header_args(None) == []
