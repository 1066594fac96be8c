"""The Open Inference Protocol V2 over REST (KServe v2, Triton, MLServer): decode, encode, describe.

An inference request is JSON, or JSON followed by raw tensors (the binary tensor extension:
``Inference-Header-Content-Length`` says where the JSON ends, each input's
``parameters.binary_data_size`` how many bytes are its own). Inputs come in one of two forms:

* one tensor holding every feature, shape ``[rows, features]`` in schema order: it becomes the
  ``matrix`` layout, a numpy array checked without per-value Python;
* one tensor per feature, named after it, shape ``[rows]`` or ``[rows, 1]`` (MLServer's
  ``content_type: "pd"``), so strings and numbers mix: it becomes the ``columns`` layout.

Outputs are named as MLServer's scikit-learn runtime names them (``predict``,
``predict_proba``) plus ``ids`` (the prediction ids feedback refers to); a request picks them
with ``outputs`` and asks for binary ones with ``parameters.binary_data`` (or
``binary_data_output`` for all). ``id`` is echoed and request ``parameters`` passed through.
No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.models.rollout import routing_key_from
from service.protocols import check_columns, check_keys, parse_json, tensors
from service.protocols.tensors import invalid
from service.serving.inference import Answer, PredictRequest, Target
from service.serving.runtime import LoadedModel
from service.serving.schemas import EMPTY, TOO_MANY_ROWS
from service.serving.validation import raise_errors

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE, BINARY_TYPE = "application/json", "application/octet-stream"
OUTPUTS = ("predict", "predict_proba", "ids")
DEFAULT_OUTPUTS = ("predict", "ids")  # MLServer answers predict alone; ids make feedback possible
SERVER = {"name": "sklearn-prediction-server", "version": "1", "extensions": ["binary_tensor_data"]}
PLATFORM = "sklearn"
FEATURE_DATATYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


@dataclass(frozen=True)
class InferRequest:
    """A decoded V2 request: the protocol-neutral request plus what the V2 answer must carry."""

    request: PredictRequest
    id: str
    parameters: dict[str, Any]  # passed through to the response
    outputs: tuple[str, ...]
    binary: frozenset[str]  # outputs to send as binary data


def decode(body: bytes, target: Target, *, header_length: str | None, max_rows: int, request_id: str,
           features: int | None = None, routing_header: str | None = None) -> InferRequest:
    """Parse an inference request body (JSON or JSON plus binary tensors); 400/422 naming the problem.

    With ``features`` (the model's), far more input tensors than it has features are refused before each is checked.
    """
    header, binary = _split(body, header_length)
    payload = parse_json(header)
    if type(payload) is dict:
        _check_keys(payload, features)
    envelope = _load(payload)
    parameters = envelope.get("parameters", {})
    layout, data = _inputs(envelope["inputs"], binary, max_rows)
    outputs, binary_outputs = _outputs(envelope.get("outputs"), parameters)
    key = routing_key_from(routing_header, parameters.get("routing_key"))
    request = PredictRequest(Target(target.name, target.version, target.label, key), layout, data,
                             "predict_proba" in outputs)
    passed = {k: v for k, v in parameters.items() if k != "binary_data_output"}
    return InferRequest(request, envelope.get("id", request_id), passed, outputs, binary_outputs)


def encode(answer: Answer, wanted: InferRequest) -> tuple[bytes, dict[str, str]]:
    """Return the response body and its headers: JSON, or a JSON header and binary outputs after it."""
    result = answer.result
    arrays = {"predict": result.predictions, "predict_proba": result.probabilities,
              "ids": np.array(answer.ids, dtype=object)}
    outputs, chunks = [], []
    for name in wanted.outputs:
        values = arrays[name]
        datatype = tensors.output_datatype(values)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if name in wanted.binary:
            chunks.append(tensors.to_binary(values, datatype))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = tensors.to_json_data(values, datatype)
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": answer.target.name, "model_version": str(answer.version),
                            "id": wanted.id, "outputs": outputs}
    parameters = dict(wanted.parameters)
    if answer.fallback_from is not None:
        parameters.update(fallback_from_version=answer.fallback_from, fallback_reason=answer.fallback_reason)
    if parameters:
        body["parameters"] = parameters
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": JSON_TYPE}
    return b"".join([header, *chunks]), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


# -- metadata -----------------------------------------------------------------------------------


def model_metadata(name: str, versions: list[int], model: LoadedModel) -> dict[str, Any]:
    """Describe a model as V2 tensors: one input per feature (or all as one [rows, features] tensor)."""
    outputs = [{"name": "predict", "datatype": _predict_datatype(model), "shape": [-1]}]
    if model.has_probabilities and model.classes:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes)]})
    outputs.append({"name": "ids", "datatype": "BYTES", "shape": [-1]})
    return {"name": name, "versions": [str(v) for v in versions], "platform": PLATFORM,
            "inputs": [_feature_tensor(feature) for feature in model.features], "outputs": outputs,
            "parameters": {"content_type": "pd", "version": str(model.version), "backend": model.backend,
                           "max_abs_diff": model.serving()["max_abs_diff"]}}


def _feature_tensor(feature: dict[str, Any]) -> dict[str, Any]:
    kind = feature["type"]
    datatype = FEATURE_DATATYPES.get(kind)
    if datatype is None:  # a category: numeric codes travel as INT64, anything else as BYTES
        categories = feature.get("categories") or []
        numeric = categories and all(type(c) is int for c in categories)
        hashed = feature.get("category_sha256")  # personal data: only whether the codes were text is known
        datatype = "INT64" if numeric or (isinstance(hashed, dict) and hashed.get("text") is False) else "BYTES"
    parameters = {"type": kind, "required": bool(feature.get("required", True)),
                  "nullable": bool(feature.get("nullable", False))}
    if not feature.get("pii"):  # a personal-data feature's bounds may be somebody's values: never shown
        parameters.update({bound: feature[bound] for bound in ("min", "max") if feature.get(bound) is not None})
    return {"name": feature["name"], "datatype": datatype, "shape": [-1], "parameters": parameters}


def _predict_datatype(model: LoadedModel) -> str:
    classes = model.classes
    if not classes:
        return "FP64"
    kinds = set(map(type, classes))
    return {frozenset({int}): "INT64", frozenset({bool}): "BOOL", frozenset({float}): "FP64"}.get(
        frozenset(kinds), "BYTES")


# -- the request envelope -----------------------------------------------------------------------


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """Cut the body at the JSON header's end: what follows is the inputs' binary data."""
    if header_length is None:
        return body, memoryview(b"")
    value = header_length.strip()
    if not value.isascii() or not value.isdigit() or int(value) > len(body):
        invalid(HEADER_LENGTH, f"Must be a whole number of bytes from 0 to the body's length ({len(body)}).")
    view = memoryview(body)
    return body[:int(value)], view[int(value):]


class Shape(fields.Field):
    """A tensor shape: a non-empty list of non-negative integers."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[int]:
        if type(value) is not list or not value or any(type(d) is not int or d < 0 for d in value):
            raise ValidationError("Must be a non-empty list of non-negative integers.")
        return value


class Parameters(fields.Dict):
    """A parameters object, copied as it is: JSON keys are strings already, so none is checked one by one."""


class TensorSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=256))
    shape = Shape(required=True)
    datatype = fields.String(required=True, validate=validate.OneOf(tensors.DATATYPES))
    parameters = Parameters()
    data = fields.Raw()  # checked against shape and datatype by service.protocols.tensors, never value by value


class RequestedOutputSchema(Schema):
    name = fields.String(required=True, validate=validate.OneOf(OUTPUTS))
    parameters = Parameters()


class InferenceRequestSchema(Schema):
    id = fields.String(validate=validate.Length(max=256))
    parameters = Parameters()
    inputs = fields.List(fields.Nested(TensorSchema, unknown=RAISE), required=True, validate=validate.Length(min=1))
    outputs = fields.List(fields.Nested(RequestedOutputSchema, unknown=RAISE))


_schema = InferenceRequestSchema(unknown=RAISE)


def _check_keys(payload: dict[str, Any], features: int | None) -> None:
    """Refuse far more input tensors than the model has features, and objects full of unknown keys, unloaded."""
    check_keys(payload, InferenceRequestSchema)
    for key, schema in (("inputs", TensorSchema), ("outputs", RequestedOutputSchema)):
        tensors_ = payload.get(key)
        if type(tensors_) is list:
            if key == "inputs":
                check_columns(len(tensors_), features, key)
            for i, tensor in enumerate(tensors_):
                check_keys(tensor, schema, f"{key}[{i}]")


def _load(payload: Any) -> dict[str, Any]:
    try:
        return _schema.load(payload)
    except ValidationError as exc:
        errors = _flatten(exc.messages)
    raise_errors(errors, {})  # outside the except, so logs do not chain marshmallow's error


def _flatten(messages: Any, path: str = "") -> list[tuple[None, str | None, list[str]]]:
    """Name each marshmallow message by its path, ``inputs[0].datatype`` (no row: nothing is a row yet)."""
    if not isinstance(messages, dict):
        return [(None, path or None, list(messages))]
    out = []
    for key, value in messages.items():
        if key == "_schema":
            out += _flatten(value, path)
        else:
            out += _flatten(value, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key)
    return out


# -- inputs and outputs -------------------------------------------------------------------------


def _inputs(inputs: list[dict[str, Any]], binary: memoryview, max_rows: int) -> tuple[str, Any]:
    """Turn the input tensors into one layout: a matrix (one 2-D tensor) or columns (one per feature)."""
    names = [tensor["name"] for tensor in inputs]
    if len(set(names)) != len(names):
        invalid("inputs", "Input names must be unique.")
    matrix = len(inputs) == 1 and len(inputs[0]["shape"]) == 2
    offset, data = 0, {}
    for i, tensor in enumerate(inputs):
        field, shape = f"inputs[{i}]", tensor["shape"]
        if not matrix and not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            invalid(f"{field}.shape", "Send one [rows] or [rows, 1] tensor per feature, or all features as "
                                      "one [rows, features] tensor in schema order.")
        if shape[0] == 0:
            invalid(f"{field}.shape", EMPTY)
        if shape[0] > max_rows:
            invalid(f"{field}.shape", TOO_MANY_ROWS.format(max_rows=max_rows))
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            if "data" not in tensor:
                invalid(field, "Missing data (or parameters.binary_data_size for binary data).")
            values = tensors.from_json(tensor["data"], tensor["datatype"], shape, field) if matrix \
                else tensors.flatten(tensor["data"], field)
        else:
            if type(size) is not int or size < 0 or offset + size > len(binary) or "data" in tensor:
                invalid(f"{field}.parameters.binary_data_size", "Must be the byte count of this input's binary "
                        "data, which follows the JSON header (Inference-Header-Content-Length), without data.")
            values = _nan_as_null(tensors.from_binary(binary[offset:offset + size], tensor["datatype"], shape, field))
            offset += size
            if not matrix:
                values = values.reshape(-1).tolist()
        data[tensor["name"]] = values
    if offset != len(binary):
        invalid(HEADER_LENGTH, f"The body holds {len(binary) - offset} bytes past the inputs' binary data.")
    if matrix:
        return "matrix", data[names[0]]
    for i, name in enumerate(names):
        if len(data[name]) != inputs[i]["shape"][0]:
            invalid(f"inputs[{i}]", f"Must hold {inputs[i]['shape'][0]} values for shape {inputs[i]['shape']}, "
                                    f"not {len(data[name])}.")
    return "columns", data


def _nan_as_null(values: np.ndarray) -> np.ndarray:
    """Read NaN in a binary FP tensor as a missing value, as JSON ``null`` is read.

    Binary data has no null, so NaN is how clients (numpy, pandas, tritonclient) mark one. The
    values become Python objects only when a NaN is there; validation then treats each as JSON
    ``null``: missing for a nullable feature, "Field may not be null." for another. Infinity
    stays a number and is refused as one.
    """
    if values.dtype.kind != "f" or not (missing := np.isnan(values)).any():
        return values
    marked = values.astype(object)
    marked[missing] = None
    return marked


def _outputs(requested: list[dict[str, Any]] | None, parameters: dict[str, Any]) -> tuple[tuple[str, ...], frozenset[str]]:
    """Return the outputs to send, in order, and which of them go as binary data."""
    all_binary = parameters.get("binary_data_output", False)
    if type(all_binary) is not bool:
        invalid("parameters.binary_data_output", "Must be true or false.")
    if not requested:
        return DEFAULT_OUTPUTS, frozenset(DEFAULT_OUTPUTS if all_binary else ())
    names = tuple(output["name"] for output in requested)
    if len(set(names)) != len(names):
        invalid("outputs", "Output names must be unique.")
    binary = set()
    for i, output in enumerate(requested):
        flag = output.get("parameters", {}).get("binary_data", all_binary)
        if type(flag) is not bool:
            invalid(f"outputs[{i}].parameters.binary_data", "Must be true or false.")
        if flag:
            binary.add(output["name"])
    return names, frozenset(binary)
