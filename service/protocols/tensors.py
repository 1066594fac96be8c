"""Open Inference Protocol V2 tensors: datatypes, and tensor data to numpy and back.

Numbers in JSON ``data`` become arrays through ``array`` and ``numpy.frombuffer`` (C-level
iteration, no per-value Python); binary data (the binary tensor extension: little-endian,
row-major, ``BYTES`` elements as 4-byte length-prefixed strings) through ``numpy.frombuffer``.
What the values mean for a model is checked later (``service.serving.validation``); here only
the tensor's own promises are: its datatype and its shape. Every refusal is a 422 naming the
tensor. No Flask.
"""

from __future__ import annotations

import math
from array import array
from itertools import chain
from typing import Any, NoReturn

import numpy as np

from service.serving.schemas import NOT_A_LIST
from service.serving.validation import raise_errors

#: fixed-size datatypes and their wire layout (little-endian whatever the machine)
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, "BYTES")
LENGTH_BYTES = 4  # each BYTES element is prefixed by its length as a little-endian uint32


def invalid(field: str, message: str) -> NoReturn:
    """Refuse the request with one 422 entry about ``field`` (no row: it is the tensor itself)."""
    raise_errors([(None, field, [message])], {})


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


# -- into numpy ---------------------------------------------------------------------------------


def flatten(data: Any, field: str) -> list[Any]:
    """Return JSON tensor data as one flat list: the spec allows row-major flat or nested lists."""
    if type(data) is not list:
        invalid(field, NOT_A_LIST)
    while data and type(data[0]) is list:
        if set(map(type, data)) != {list}:
            invalid(field, "Must be a flat list of values or lists nested evenly, not a mix of both.")
        data = list(chain.from_iterable(data))
    return data


def from_json(data: Any, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """Turn a tensor's JSON ``data`` into an array of ``shape`` and the dtype ``datatype`` names."""
    flat = flatten(data, field)
    count = element_count(shape)
    if len(flat) != count:
        invalid(field, f"Must hold {count} values for shape {shape}, not {len(flat)}.")
    if datatype == "BYTES":
        if not set(map(type, flat)) <= {str}:
            invalid(field, "BYTES data must be strings.")
        values = np.empty(count, dtype=object)
        values[:] = flat
    elif datatype == "BOOL":
        if not set(map(type, flat)) <= {bool}:
            invalid(field, "BOOL data must be true or false.")
        values = np.array(flat, dtype=bool)
    else:
        values = _numbers(flat, datatype, field)
    return values.reshape(shape)


def _numbers(flat: list[Any], datatype: str, field: str) -> np.ndarray:
    dtype = DTYPES[datatype]
    floating = dtype.kind == "f"
    code, wide = ("d", np.float64) if floating else ("Q", np.uint64) if datatype == "UINT64" else ("q", np.int64)
    try:
        parsed = np.frombuffer(array(code, flat), dtype=wide)
    except (TypeError, OverflowError):
        invalid(field, f"{datatype} data must be {'numbers' if floating else 'integers'} within its range.")
    # array() takes booleans as 0 and 1: look at those cells only
    suspects = np.flatnonzero((parsed == 0) | (parsed == 1))
    if suspects.size and bool in set(map(type, map(flat.__getitem__, suspects.tolist()))):
        invalid(field, f"{datatype} data must be numbers, not true or false.")
    if floating:
        with np.errstate(over="ignore"):  # past FP16/FP32's range is infinity, refused as a feature value later
            return parsed.astype(dtype)
    info = np.iinfo(dtype)
    if parsed.size and (parsed.min() < info.min or parsed.max() > info.max):
        invalid(field, f"{datatype} data must be integers from {info.min} to {info.max}.")
    return parsed.astype(dtype)


def from_binary(raw: memoryview, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """Turn a tensor's binary data into an array of ``shape``; numbers are never copied one by one."""
    count = element_count(shape)
    if datatype == "BYTES":
        values = np.empty(count, dtype=object)
        values[:] = _byte_strings(raw, count, field)
        return values.reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        invalid(field, f"binary_data_size must be {count * dtype.itemsize} for {count} {datatype} values, "
                       f"not {len(raw)}.")
    if datatype == "BOOL":  # one byte each; any nonzero byte is true
        return (np.frombuffer(raw, dtype=np.uint8) != 0).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _byte_strings(raw: memoryview, count: int, field: str) -> list[str]:
    """Read ``count`` length-prefixed UTF-8 strings that fill ``raw`` exactly."""
    values, offset, end = [], 0, len(raw)
    for _ in range(count):
        if offset + LENGTH_BYTES > end:
            break
        size = int.from_bytes(raw[offset:offset + LENGTH_BYTES], "little")
        offset += LENGTH_BYTES
        if offset + size > end:
            break
        try:
            values.append(str(raw[offset:offset + size], "utf-8"))
        except UnicodeDecodeError:
            invalid(field, "BYTES elements must be UTF-8 text.")
        offset += size
    if len(values) != count or offset != end:
        invalid(field, f"binary_data_size must cover exactly {count} length-prefixed BYTES elements.")
    return values


# -- out of numpy -------------------------------------------------------------------------------


def output_datatype(values: np.ndarray) -> str:
    """Name the V2 datatype of an output array: its own numeric type, else BYTES."""
    if values.dtype.kind in "biuf":
        return next(name for name, dtype in DTYPES.items() if dtype == values.dtype.newbyteorder("<"))
    return "BYTES"


def to_json_data(values: np.ndarray, datatype: str) -> Any:
    """Return flat, row-major data for a JSON response (numpy arrays go to orjson as they are)."""
    if datatype != "BYTES":
        return values.reshape(-1)
    return [_text(value) for value in values.reshape(-1).tolist()]


def to_binary(values: np.ndarray, datatype: str) -> bytes:
    """Return an output's binary data: raw little-endian values, or length-prefixed strings for BYTES."""
    if datatype != "BYTES":
        return np.ascontiguousarray(values, dtype=DTYPES[datatype]).tobytes()
    encoded = [_text(value).encode() for value in values.reshape(-1).tolist()]
    return b"".join(chain.from_iterable((len(item).to_bytes(LENGTH_BYTES, "little"), item) for item in encoded))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
