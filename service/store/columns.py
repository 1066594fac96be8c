"""How a batch record keeps its columns: numbers as raw little-endian bytes, everything else as JSON.

Writing 300,000 floats as JSON text costs milliseconds of a request's CPU; copying their bytes
costs a fraction of one. So a numeric column (bool, int, unsigned, float: one or two dimensions)
goes into the record's ``arrays`` blob, and its place in the ``inputs``/``outputs``/
``probabilities`` JSON holds a descriptor object ``{"dtype": "<f8", "shape": [n], "at": offset}``
instead of a list. Other columns (strings, categories, objects with None) stay JSON lists, as
every record was before: a list is JSON values, an object is a descriptor, so a reader needs no
other marker and old records read as they always did. Floats are float64 with NaN for missing
(what JSON's null became when read), and an infinity reads as missing too, as it did from JSON;
float16/32 widen to float64 so readers see one dtype.

Pure numpy and orjson: no store, no Flask.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import orjson

#: numpy kinds kept as bytes: bool, signed and unsigned int, float.
BINARY_KINDS = "biuf"
#: Each column starts on a multiple of this: ``frombuffer`` views stay aligned for float64 and int64.
ALIGN = 8
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_FLOAT64 = np.dtype("<f8")
_STORED_DTYPE = {"b": np.dtype("|b1"), "i": np.dtype("<i8"), "u": np.dtype("<u8"), "f": np.dtype("<f8")}


class ArrayWriter:
    """Collect the numeric columns of one record into one blob; hand back what stands for each in JSON."""

    def __init__(self) -> None:
        self._parts: list[Any] = []
        self._size = 0

    def column(self, values: Any) -> Any:
        """Return a descriptor of ``values`` (its bytes appended to the blob), or its values as a JSON-ready list."""
        if not isinstance(values, np.ndarray):
            return list(values)  # values read from JSON, kept as JSON (``from_json`` says when they need not be)
        array = values
        if array.dtype.kind not in BINARY_KINDS or array.ndim not in (1, 2) or array.dtype.hasobject:
            return array.tolist()
        # Already float64/int64 and C-contiguous (the common case): no copy before the join.
        array = np.ascontiguousarray(array, dtype=_STORED_DTYPE[array.dtype.kind])
        descriptor = {"dtype": array.dtype.str, "shape": list(array.shape), "at": self._size}
        self._parts.append(memoryview(array).cast("B"))  # bytes.join copies it once, into the blob
        self._size += array.nbytes
        if pad := -self._size % ALIGN:
            self._parts.append(b"\0" * pad)
            self._size += pad
        return descriptor

    def columns(self, columns: list[Any]) -> list[Any]:
        """``column`` for each of ``columns``, with one copy for all when they are float64 vectors of
        one length (a request's numeric features, the common case): the same blob and descriptors."""
        if columns and all(isinstance(c, np.ndarray) and c.dtype == _FLOAT64 and c.ndim == 1 for c in columns):
            n = len(columns[0])
            if all(len(c) == n for c in columns):
                block = np.stack(columns)  # (k, n): each column's bytes contiguous, one after another
                start, step = self._size, n * _FLOAT64.itemsize  # a multiple of ALIGN: no padding
                self._parts.append(memoryview(block).cast("B"))
                self._size += block.nbytes
                return [{"dtype": _FLOAT64.str, "shape": [n], "at": start + j * step} for j in range(len(columns))]
        return [self.column(c) for c in columns]

    def block(self, block: np.ndarray) -> str:
        """Append a float64 (columns x rows, C order) block as it is (no copy before the blob's join)
        and return the ``inputs`` JSON that stands for all its columns: one 2-D descriptor (rows of
        the block are the features, in ``features`` order), built once per shape and place."""
        if block.dtype != _FLOAT64 or block.ndim != 2 or not block.flags.c_contiguous:
            raise ValueError("block takes a C-ordered 2-D float64 array")
        start = self._size
        self._parts.append(memoryview(block).cast("B"))
        self._size += block.nbytes
        return _block_descriptor(block.shape[0], block.shape[1], start)

    @property
    def size(self) -> int:
        """Bytes of the blob so far."""
        return self._size

    def parts(self) -> list[Any]:
        """The blob's pieces, in order, uncopied (for a ``writev``)."""
        return list(self._parts)

    def blob(self) -> bytes | None:
        """The record's ``arrays`` value: every column's bytes, in order; None when none is numeric."""
        return b"".join(self._parts) if self._parts else None


@functools.lru_cache(maxsize=256)
def _block_descriptor(columns: int, rows: int, start: int) -> str:
    return dumps({"dtype": _FLOAT64.str, "shape": [columns, rows], "at": start})


def dumps(value: Any) -> str:
    """JSON text of descriptors and lists: NaN and inf in a list become null (orjson's rule), so
    missing stays missing. TEXT, not BLOB: SQLite's JSON functions read a BLOB as JSONB."""
    return orjson.dumps(value, default=str, option=JSON_OPTIONS).decode()


def read(entry: Any, arrays: bytes | None) -> list[Any] | np.ndarray | None:
    """Return a stored column: a list for JSON, a read-only array for a descriptor, None when unreadable."""
    if not isinstance(entry, dict):
        return entry
    try:
        dtype = np.dtype(entry["dtype"])
        shape = tuple(int(size) for size in entry["shape"])
        if dtype.kind not in BINARY_KINDS or arrays is None:
            return None
        values = np.frombuffer(arrays, dtype=dtype, count=math.prod(shape), offset=int(entry["at"])).reshape(shape)
    except (KeyError, TypeError, ValueError):  # a descriptor that does not fit its blob: read as missing
        return None
    if dtype.kind == "f" and not np.isfinite(values).all():
        values = np.where(np.isinf(values), np.nan, values)  # inf reads as missing, as JSON's null did
    return values


def read_inputs(text: str, arrays: bytes | None) -> list[Any]:
    """Read the ``inputs`` field: one column (list, array or None) per stored feature.

    The field is a list with an entry per feature, or one 2-D descriptor of a features x rows
    block (``ArrayWriter.block``: a request whose features are all floats), whose rows are the columns.
    """
    entries = orjson.loads(text)
    if isinstance(entries, list):
        return [read(entry, arrays) for entry in entries]
    try:
        count = int(entries["shape"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        return []
    block = read(entries, arrays)
    if block is None or getattr(block, "ndim", 0) != 2 or len(block) != count:
        return [None] * count
    return list(block)


def read_block(text: str, arrays: bytes | None) -> np.ndarray | None:
    """The ``inputs`` field's features x rows block, when it was stored as one and reads back whole."""
    if not text.startswith("{"):
        return None
    entry = orjson.loads(text)
    block = read(entry, arrays)
    return block if isinstance(block, np.ndarray) and block.ndim == 2 and block.dtype.kind == "f" else None


def read_column(text: str | None, arrays: bytes | None) -> list[Any] | np.ndarray | None:
    """Read the ``outputs`` or ``probabilities`` field: one column (a list of rows for JSON probabilities)."""
    return None if text is None else read(orjson.loads(text), arrays)


def python_values(values: list[Any] | np.ndarray) -> list[Any]:
    """The column as JSON would have read it back: Python values, None for a missing (NaN) float."""
    if not isinstance(values, np.ndarray):
        return values
    out = values.tolist()
    if values.dtype.kind == "f":
        for index in zip(*np.nonzero(np.isnan(values)), strict=True):
            _set(out, index, None)
    return out


def _set(nested: list[Any], index: tuple[int, ...], value: Any) -> None:
    for i in index[:-1]:
        nested = nested[i]
    nested[index[-1]] = value


def from_json(values: list[Any]) -> list[Any] | np.ndarray:
    """A column read from JSON as the array it was written from, where that is certain; else the list.

    Lets a record written as JSON be rewritten (by erasure) in binary without changing what any
    reader sees: floats (with null for missing) become float64 with NaN, ints int64, bools bool,
    equal-length rows of floats a float64 matrix.
    """
    if not values:
        return values
    kinds = set(map(type, values))
    if kinds <= {float, type(None)} and float in kinds:
        return np.array(values, dtype=np.float64)
    if kinds == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return values
    if kinds == {bool}:
        return np.array(values, dtype=bool)
    if kinds == {list}:
        width = len(values[0])
        if all(len(row) == width for row in values) and {type(v) for row in values for v in row} <= {float, type(None)}:
            return np.array(values, dtype=np.float64)
    return values
