"""One behaviour across protocols: the same rows through every wire format give the in-process model's answer.

Each protocol in ``PROTOCOLS`` knows how to send rows (a list of lists in schema order) and read
predictions and probabilities back. Every protocol must return exactly (bit for bit) what the
served model computes in-process on the same columns, and refuse every bad input
in ``BAD_INPUTS`` with a 4xx, never a 5xx. A new protocol joins by adding a row to the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.api.test_predict import rows_of

GARBAGE = object()  # a body that is not the protocol's format at all


def reference(app, name: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """The served model in-process (whatever its backend), on the frame's columns: no protocol, no validation."""
    model = app.extensions["catalog"].resolve(name)
    result = model.predict({column: frame[column].to_numpy() for column in frame.columns}, model.has_probabilities)
    return result.predictions, result.probabilities


@dataclass(frozen=True)
class Protocol:
    send: Callable[..., Any]  # (client, model, rows, names, probabilities) -> response
    read: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]


# -- v1 -----------------------------------------------------------------------------------------


def _v1_send(records: bool) -> Callable[..., Any]:
    def send(client, model, rows, names, probabilities):
        if rows is GARBAGE:
            return client.post(f"/v1/models/{model}:predict", data=b"{not json", content_type="application/json")
        instances = [dict(zip(names, row, strict=False)) for row in rows] if records else rows
        body = {"instances": instances, "parameters": {"probabilities": probabilities}}
        return client.post(f"/v1/models/{model}:predict", json=body)

    return send


def _v1_read(response) -> tuple[np.ndarray, np.ndarray | None]:
    body = response.get_json()
    proba = body.get("probabilities")
    return np.asarray(body["predictions"]), None if proba is None else np.asarray(proba)


# -- Open Inference Protocol V2 --------------------------------------------------------------------


def _outputs(probabilities: bool, binary: bool) -> list[dict[str, Any]]:
    names = ["predict", "predict_proba"] if probabilities else ["predict"]
    return [{"name": name, "parameters": {"binary_data": binary}} for name in names]


def _numeric(rows) -> bool:
    return all(type(v) in (int, float) or v is None for row in rows for v in row)


def _v2_json(client, model, rows, names, probabilities):
    if rows is GARBAGE:
        return client.post(f"/v2/models/{model}/infer", data=b"{not json", content_type="application/json")
    width = len(rows[0]) if rows else len(names)
    tensor = {"name": "input-0", "shape": [len(rows), width], "datatype": "FP64" if _numeric(rows) else "BYTES",
              "data": [v for row in rows for v in row]}
    return client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor], "outputs": _outputs(probabilities, False)})


def _v2_columns(client, model, rows, names, probabilities):
    if rows is GARBAGE:
        return client.post(f"/v2/models/{model}/infer", data=b"\x00\x01", content_type="application/json")
    width = len(rows[0]) if rows else len(names)
    inputs = [{"name": name, "shape": [len(rows)], "datatype": "FP64", "data": [row[i] for row in rows]}
              for i, name in enumerate(names[:width])]
    return client.post(f"/v2/models/{model}/infer", json={"inputs": inputs, "outputs": _outputs(probabilities, False)})


def _v2_binary(client, model, rows, names, probabilities):
    """As tritonclient.http sends it: FP64 (or BYTES) raw after the JSON header, no Content-Type."""
    if rows is GARBAGE:
        return client.post(f"/v2/models/{model}/infer", data=b"\xff" * 16, headers={"Inference-Header-Content-Length": "8"})
    width = len(rows[0]) if rows else len(names)
    if _numeric(rows):
        datatype = "FP64"
        raw = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype="<f8").tobytes()
    else:
        datatype = "BYTES"
        raw = b"".join(len(s).to_bytes(4, "little") + s for row in rows for s in (str(v).encode() for v in row))
    head = json.dumps({"inputs": [{"name": "input-0", "shape": [len(rows), width], "datatype": datatype,
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": _outputs(probabilities, True)}).encode()
    return client.post(f"/v2/models/{model}/infer", data=head + raw,
                       headers={"Inference-Header-Content-Length": str(len(head))})


def _v2_read(response) -> tuple[np.ndarray, np.ndarray | None]:
    length = response.headers.get("Inference-Header-Content-Length")
    header = json.loads(response.data if length is None else response.data[:int(length)])
    offset, found = int(length or 0), {}
    for output in header["outputs"]:
        if "data" in output:
            values = np.asarray(output["data"])
        else:
            size = output["parameters"]["binary_data_size"]
            dtype = {"INT64": "<i8", "FP64": "<f8"}[output["datatype"]]
            values = np.frombuffer(response.data[offset:offset + size], dtype=dtype)
            offset += size
        found[output["name"]] = values.reshape(output["shape"])
    return found["predict"], found.get("predict_proba")


PROTOCOLS = {
    "v1 rows": Protocol(_v1_send(records=False), _v1_read),
    "v1 records": Protocol(_v1_send(records=True), _v1_read),
    "v2 json": Protocol(_v2_json, _v2_read),
    "v2 json per feature": Protocol(_v2_columns, _v2_read),
    "v2 binary": Protocol(_v2_binary, _v2_read),
}


# -- the table ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
@pytest.mark.parametrize("n", [1, 40, 300])  # below and above the vectorised threshold
def test_every_protocol_answers_what_the_model_computes(app, client, protocol, name, n):
    frame = rows_of(name, n, seed=n)
    expected, expected_proba = reference(app, name, frame)
    rows = frame.astype(object).to_numpy().tolist()  # Python ints and floats: JSON carries them exactly
    response = PROTOCOLS[protocol].send(client, name, rows, list(frame.columns), expected_proba is not None)
    assert response.status_code == 200, response.data[:300]
    assert response.headers["X-Model-Version"] == "1"
    predictions, probabilities = PROTOCOLS[protocol].read(response)
    assert predictions.shape == expected.shape
    assert np.array_equal(predictions, expected)  # exactly: no protocol may round or reorder
    if expected_proba is None:
        assert probabilities is None
    else:
        assert np.array_equal(probabilities, expected_proba)


def _set(row: int, column: int, value: Any) -> Callable[[list[list[Any]]], list[list[Any]]]:
    def change(rows):
        rows[row][column] = value
        return rows

    return change


BAD_INPUTS = {
    "out of range": _set(1, 0, -1.0),
    "null": _set(0, 2, None),
    "text in a number": _set(2, 3, "abc"),
    "a feature short": lambda rows: [row[:-1] for row in rows],
    "no rows": lambda rows: [],
    "too many rows": lambda rows: rows * 3,
    "not the protocol's format": lambda rows: GARBAGE,
}


@pytest.fixture
def small_batches(make_app):
    return make_app(max_batch_rows=10).test_client()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_a_4xx_on_every_protocol(small_batches, protocol, case):
    frame = rows_of("breast-cancer", 4)
    rows = BAD_INPUTS[case](frame.astype(object).to_numpy().tolist())
    response = PROTOCOLS[protocol].send(small_batches, "breast-cancer", rows, list(frame.columns), False)
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    assert response.get_json()["error"]
