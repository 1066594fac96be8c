"""The V2 codec: JSON and binary tensors become protocol-neutral requests, answers become V2 bodies."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from service.errors import InvalidJSON, ValidationFailed
from service.protocols import tensors, v2
from service.serving.inference import Answer, PredictRequest, Target
from service.serving.runtime import Prediction
from service.serving.validation import ValidatedBatch

TARGET = Target("breast-cancer", version=2)


def decode(body, header_length=None, max_rows=100, routing_header=None):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return v2.decode(raw, TARGET, header_length=header_length, max_rows=max_rows, request_id="req-1",
                     routing_header=routing_header)


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), str(len(head))


def length_prefixed(*items: str) -> bytes:
    return b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in items)


def refusal(*args, **kwargs) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as exc:
        decode(*args, **kwargs)
    return exc.value


# -- one tensor for all features: the matrix layout ---------------------------------------------


@pytest.mark.parametrize("data", [[1.5, 2.0, 3.0, 4.0, 5.0, 6.0], [[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]]], ids=["flat", "nested"])
def test_a_json_fp64_tensor_becomes_a_matrix(data):
    wanted = decode({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": data}]})
    assert wanted.request.layout == "matrix" and wanted.request.target == TARGET
    np.testing.assert_array_equal(wanted.request.data, [[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert wanted.request.data.dtype == np.float64
    assert (wanted.id, wanted.outputs, wanted.binary, wanted.request.probabilities) == ("req-1", v2.DEFAULT_OUTPUTS,
                                                                                        frozenset(), False)


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT64", "BOOL"])
def test_a_binary_tensor_is_read_with_frombuffer_in_every_numeric_datatype(datatype):
    values = (np.arange(6).reshape(2, 3) % 2).astype(tensors.DTYPES[datatype])
    body, length = binary_body({"inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype,
                                            "parameters": {"binary_data_size": values.nbytes}}]}, values.tobytes())
    matrix = decode(body, header_length=length).request.data
    assert matrix.dtype == values.dtype and matrix.shape == (2, 3)
    np.testing.assert_array_equal(matrix, values)
    assert not matrix.flags.owndata  # a view on the request body: nothing was copied value by value


def test_binary_bytes_are_length_prefixed_utf8():
    raw = length_prefixed("a", "é", "", "xyz")
    body, length = binary_body({"inputs": [{"name": "s", "shape": [2, 2], "datatype": "BYTES",
                                            "parameters": {"binary_data_size": len(raw)}}]}, raw)
    assert decode(body, header_length=length).request.data.tolist() == [["a", "é"], ["", "xyz"]]


def test_json_integers_keep_their_datatype_and_range():
    matrix = decode({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [-128, 127]}]}).request.data
    assert matrix.dtype == np.int8
    error = refusal({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 300]}]})
    assert error.details["errors"][0]["field"] == "inputs[0]" and "from -128 to 127" in error.message


@pytest.mark.parametrize(("datatype", "data"), [
    ("FP64", [1.0, "2"]), ("FP64", [1.0, None]), ("FP64", [1.0, True]), ("INT64", [1, 2.5]),
    ("BOOL", [True, 1]), ("BYTES", ["a", 1]), ("UINT8", [1, -1]),
])
def test_json_data_must_match_its_datatype(datatype, data):
    error = refusal({"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]})
    assert error.status == 422 and error.details["errors"][0]["field"] == "inputs[0]"


# -- one tensor per feature: the columns layout -------------------------------------------------


def test_one_input_per_feature_becomes_columns_mixing_json_and_binary():
    ages = np.array([50, 61], dtype="<i8")
    names = length_prefixed("x", "y")
    body, length = binary_body({"inputs": [
        {"name": "age", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
        {"name": "grade", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]},
        {"name": "note", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(names),
                                                                            "content_type": "str"}},
        {"name": "bmi", "shape": [2], "datatype": "FP64", "data": [20.5, None]},
    ], "parameters": {"content_type": "pd"}}, ages.tobytes(), names)
    request = decode(body, header_length=length).request
    assert request.layout == "columns"
    assert request.data == {"age": [50, 61], "grade": ["a", "b"], "note": ["x", "y"], "bmi": [20.5, None]}
    assert type(request.data["age"][0]) is int  # Python values: validation checks them like v1 columns


def test_per_feature_inputs_must_be_one_column_each():
    error = refusal({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]},
                                {"name": "b", "shape": [2], "datatype": "FP64", "data": [1, 2]}]})
    assert error.details["errors"][0]["field"] == "inputs[0].shape"
    error = refusal({"inputs": [{"name": "a", "shape": [3], "datatype": "FP64", "data": [1, 2]},
                                {"name": "b", "shape": [2], "datatype": "FP64", "data": [1, 2]}]})
    assert "Must hold 3 values" in error.message


# -- the envelope and the binary framing ---------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({}, "inputs"),
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP99", "data": [1, 2]}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "x", "shape": [1, -2], "datatype": "FP64", "data": [1, 2]}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64"}]}, "inputs[0]"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2]}]}, "inputs[0]"),
    ({"inputs": [{"name": "x", "shape": [0, 2], "datatype": "FP64", "data": []}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "x", "shape": [101, 1], "datatype": "FP64", "data": [1] * 101}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, [2]]}]}, "inputs[0]"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}] * 2}, "inputs"),
    ({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1]}], "outputs": [{"name": "score"}]},
     "outputs[0].name"),
    ({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1]}], "extra": 1}, "extra"),
    ({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1],
                  "parameters": {"binary_data_size": 8}}]}, "inputs[0].parameters.binary_data_size"),
    ({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1]}],
      "parameters": {"binary_data_output": "yes"}}, "parameters.binary_data_output"),
])
def test_a_bad_request_is_one_422_naming_the_field(body, field):
    assert refusal(body).details["errors"][0]["field"] == field


@pytest.mark.parametrize(("chunk", "size", "length"), [
    (b"\x00" * 15, 16, None),  # shorter than declared
    (b"\x00" * 17, 16, None),  # bytes left over
    (b"\x00" * 16, 8, None),  # the size does not fit the shape
    (b"\x00" * 16, 16, "-1"),
    (b"\x00" * 16, 16, "99999"),
])
def test_binary_framing_must_add_up(chunk, size, length):
    body, header_length = binary_body({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                                                   "parameters": {"binary_data_size": size}}]}, chunk)
    refusal(body, header_length=length or header_length)


def test_bytes_elements_must_fill_their_size_and_be_utf8():
    for raw in (length_prefixed("ab")[:-1], length_prefixed("ab") + b"\x00", (2).to_bytes(4, "little") + b"\xff\xfe"):
        body, length = binary_body({"inputs": [{"name": "s", "shape": [1, 1], "datatype": "BYTES",
                                                "parameters": {"binary_data_size": len(raw)}}]}, raw)
        refusal(body, header_length=length)


def test_bad_json_is_a_400():
    with pytest.raises(InvalidJSON):
        decode(b"{not json")
    with pytest.raises(InvalidJSON):
        decode(b"")


def test_outputs_id_parameters_and_routing_key():
    body = {"id": "mine", "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1]}],
            "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}, {"name": "predict"}],
            "parameters": {"routing_key": "customer-7", "binary_data_output": False, "trace": "t"}}
    wanted = decode(body)
    assert wanted.id == "mine" and wanted.outputs == ("predict_proba", "predict")
    assert wanted.binary == {"predict_proba"} and wanted.request.probabilities is True
    assert wanted.parameters == {"routing_key": "customer-7", "trace": "t"}
    assert wanted.request.target.routing_key == "customer-7"
    assert decode(body, routing_header="from-header").request.target.routing_key == "from-header"
    body = {**body, "outputs": [], "parameters": {"binary_data_output": True}}
    assert decode(body).binary == set(v2.DEFAULT_OUTPUTS)


# -- encoding -----------------------------------------------------------------------------------


def _answer(predictions, probabilities=None, fallback_from=None):
    model = type("Loaded", (), {"version": 3})()
    request = PredictRequest(TARGET, "matrix", np.zeros((len(predictions), 1)), probabilities is not None)
    result = Prediction(np.asarray(predictions), None if probabilities is None else np.asarray(probabilities),
                        [0, 1] if probabilities is not None else None)
    return Answer(request, model, "pinned", ValidatedBatch({}, len(predictions)), result,
                  [f"id-{i}" for i in range(len(predictions))], 0.001, fallback_from, "error" if fallback_from else None)


def wanted(outputs=v2.DEFAULT_OUTPUTS, binary=(), parameters=None):
    return v2.InferRequest(_answer([0]).request, "req-9", parameters or {}, tuple(outputs), frozenset(binary))


def test_encode_json_names_outputs_like_mlserver():
    body, headers = v2.encode(_answer([0, 1], [[0.75, 0.25], [0.5, 0.5]]),
                              wanted(("predict", "predict_proba", "ids"), parameters={"trace": "t"}))
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "breast-cancer", "model_version": "3", "id": "req-9", "parameters": {"trace": "t"},
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2], "data": [0.75, 0.25, 0.5, 0.5]},
                    {"name": "ids", "datatype": "BYTES", "shape": [2], "data": ["id-0", "id-1"]}]}


def test_encode_binary_outputs_after_the_json_header():
    body, headers = v2.encode(_answer(["yes", "no"], fallback_from=4), wanted(("predict", "ids"), binary={"predict"}))
    length = int(headers[v2.HEADER_LENGTH])
    assert headers["Content-Type"] == "application/octet-stream"
    header = orjson.loads(body[:length])
    assert header["parameters"] == {"fallback_from_version": 4, "fallback_reason": "error"}
    predict, ids = header["outputs"]
    assert predict == {"name": "predict", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 13}}
    assert body[length:] == length_prefixed("yes", "no") and ids["data"] == ["id-0", "id-1"]


def test_numeric_binary_outputs_are_little_endian_values():
    body, headers = v2.encode(_answer([1.5, -2.0]), wanted(("predict",), binary={"predict"}))
    length = int(headers[v2.HEADER_LENGTH])
    assert orjson.loads(body[:length])["outputs"][0]["datatype"] == "FP64"
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype="<f8"), [1.5, -2.0])


# -- NaN in binary tensors: missing, as JSON null ---------------------------------------------------

NULLABLE = [{"name": "age", "type": "float"}, {"name": "income", "type": "float", "nullable": True},
            {"name": "visits", "type": "int", "nullable": True}]


def _validated(body: bytes, header: str, path: int):
    from service.serving.validation import validate_rows

    request = decode(body, header).request
    return validate_rows(request.layout, request.data, NULLABLE, vectorized_min_rows=path)


def _refusal(body: bytes, header: str | None, path: int) -> dict:
    with pytest.raises(ValidationFailed) as exc:
        _validated(body, header, path)
    return exc.value.details


def _columns(datatype: str, columns: dict[str, list]) -> tuple[bytes, str]:
    dtype = tensors.DTYPES[datatype]
    raws = [np.asarray(values, dtype=dtype).tobytes() for values in columns.values()]
    inputs = [{"name": name, "shape": [len(values)], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
              for (name, values), raw in zip(columns.items(), raws, strict=True)]
    return binary_body({"inputs": inputs}, *raws)


@pytest.mark.parametrize("path", [10**9, 1])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_nan_in_a_binary_column_is_missing_for_a_nullable_feature(datatype, path):
    body, header = _columns(datatype, {"age": [30.0, 40.0], "income": [np.nan, 2.5], "visits": [3.0, np.nan]})
    columns = _validated(body, header, path).columns
    assert np.isnan(columns["income"][0]) and columns["income"][1] == 2.5
    assert columns["visits"][0] == 3


@pytest.mark.parametrize("path", [10**9, 1])
def test_nan_for_a_feature_that_is_not_nullable_gets_json_nulls_error(path):
    body, header = _columns("FP64", {"age": [30.0, np.nan], "income": [1.0, 2.0], "visits": [1.0, 2.0]})
    as_json = json.dumps({"inputs": [{"name": n, "shape": [2], "datatype": "FP64", "data": d} for n, d in
                                     (("age", [30.0, None]), ("income", [1.0, 2.0]), ("visits", [1.0, 2.0]))]})
    assert _refusal(body, header, path) == _refusal(as_json.encode(), None, path)
    assert _refusal(body, header, path)["errors"] == [{"row": 1, "field": "age", "messages": ["Field may not be null."]}]


@pytest.mark.parametrize("path", [10**9, 1])
def test_nan_in_a_binary_matrix_is_missing_where_nullable_and_refused_elsewhere(path):
    rows = np.array([[30.0, np.nan, 1.0], [np.nan, 2.0, np.nan]])
    raw = rows.astype("<f8").tobytes()
    body, header = binary_body({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64",
                                            "parameters": {"binary_data_size": len(raw)}}]}, raw)
    assert _refusal(body, header, path)["errors"] == [{"row": 1, "field": "age", "messages": ["Field may not be null."]}]
    rows[1, 0] = 50.0
    raw = rows.astype("<f8").tobytes()
    columns = _validated(body[:-len(raw)] + raw, header, path).columns
    assert columns["age"].tolist() == [30.0, 50.0] and np.isnan(columns["income"][0])

