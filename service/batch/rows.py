"""Validate a chunk of file rows with the API's rules, rejecting rows one by one.

A request is refused whole when one value fails; a batch run rejects the rows that fail and
scores the others. Each rejected row carries the error the API answers for that row
(``ValidationFailed``, built by ``validation.raise_errors`` from the same (row, field, message)
entries, rows numbered from the start of the file), and the good rows' columns are the arrays
the API would build for them. The rules are the API's: typed columns (Parquet numbers) go
through the numpy checks tensor requests use (``service.serving.matrix``), every other column
through ``validation.check_column``, the records path's rules. A missing value (an empty CSV
field, a Parquet null or NaN, a key absent from a JSON line) is an absent field: refused when
the feature is required, None otherwise. CSV text becomes the JSON value it spells for the
feature: a number for numeric features, the declared category for categories (so "01" stays
"01"), true/false for booleans. No Flask.
"""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.batch.reading import Chunk
from service.errors import ValidationFailed
from service.serving.columns import build_array
from service.serving.matrix import CHECKS
from service.serving.schemas import REQUIRED, UNKNOWN, FeatureSpec, ModelSchema
from service.serving.validation import check_column, raise_errors

INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class Checked:
    """A chunk after validation: the good rows' columns, their positions, and the rejected rows."""

    columns: dict[str, np.ndarray]
    good: np.ndarray  # positions of the good rows in the chunk, ascending
    rejects: list[tuple[int, ValidationFailed]]  # (position in the chunk, what the API answers for that row)
    block: np.ndarray | None = None  # the columns as rows of one float64 array (a rows x features one, transposed)


def missing_columns(schema: ModelSchema, columns: Sequence[str]) -> list[str]:
    """The required features a file with these columns lacks: every one of its rows would fail."""
    return [spec.name for spec in schema.specs if spec.required and spec.name not in columns]


def check_chunk(schema: ModelSchema, chunk: Chunk, allowed: frozenset[str]) -> Checked:
    """Validate every row of ``chunk``; ``allowed`` are the non-feature keys a JSON line may hold."""
    clean = _clean_floats(schema, chunk)
    if clean is not None:
        return clean
    n = chunk.n_rows
    errors: dict[int, list[tuple[int, Any, list[str]]]] = defaultdict(list)
    number = chunk.positions(np.arange(n)).tolist()
    values: dict[str, np.ndarray | list[Any]] = {}
    records = None
    if chunk.records is not None:
        records = [record if record is not None else {} for record in chunk.records]
        for i, record in enumerate(records):
            if not allowed.issuperset(record):
                errors[i] += [(number[i], key, [UNKNOWN]) for key in record if key not in allowed]
    for spec in schema.specs:
        if records is not None:
            column, absent = _extract(records, spec.name)
            found, failures = check_column(spec, column, absent)
        elif spec.name not in chunk.table.column_names:  # an optional feature the file does not have
            found, failures = build_array(spec, [None] * n), []
        else:
            found, failures = _typed_column(spec, chunk.table.column(spec.name), chunk.text)
        values[spec.name] = found
        for i, message in failures:
            errors[i].append((number[i], spec.name, [message]))
    for i, reason in chunk.broken.items():  # a line that is no object: that is its only error
        errors[i] = [(number[i], None, [reason])]
    rejects = [(i, _row_error(errors[i], schema)) for i in sorted(errors)]
    if not rejects:
        return Checked({name: _array(spec, values[name]) for name, spec in zip(schema.names, schema.specs,
                                                                               strict=True)}, np.arange(n), [])
    good = np.setdiff1d(np.arange(n), np.fromiter(errors, dtype=np.int64, count=len(errors)), assume_unique=True)
    columns = {spec.name: _settle(spec, _take(spec, values[spec.name], good)) for spec in schema.specs}
    return Checked(columns, good, rejects)


def _clean_floats(schema: ModelSchema, chunk: Chunk) -> Checked | None:
    """The whole chunk as one rows x features float64 array, when every feature is a float and every value
    is present, finite and within its bounds: then each check of ``_typed_column`` passes and nothing is
    rejected. The array's rows are what ONNX Runtime takes, without a copy. None (a value missing, not a
    number, out of bounds; a feature of another kind) sends the chunk through the checks column by column,
    which name what fails."""
    specs, _, lo, hi = schema.float_block
    table = chunk.table
    if table is None or len(specs) != len(schema.specs) or not specs:
        return None
    matrix = np.empty((chunk.n_rows, len(specs)))
    for j, spec in enumerate(specs):
        if spec.name not in table.column_names:
            return None
        column = table.column(spec.name)
        if chunk.text:
            try:
                column = pc.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        if not pa.types.is_floating(column.type) or column.null_count:
            return None
        start = 0
        for piece in column.chunks:
            matrix[start:start + len(piece), j] = piece.to_numpy()
            start += len(piece)
    if not np.isfinite(matrix).all() or ((matrix < lo.T) | (matrix > hi.T)).any():
        return None  # NaN is a missing value here, as in _typed_column
    block = matrix.T
    return Checked(dict(zip(schema.names, block, strict=True)), np.arange(chunk.n_rows), [], block)


def _row_error(entries: list[tuple[int, Any, list[str]]], schema: ModelSchema) -> ValidationFailed:
    """The 422 the API answers for these (row, field, messages) entries: same order, message and details."""
    try:
        raise_errors(entries, schema.positions)
    except ValidationFailed as exc:
        return exc
    raise AssertionError("raise_errors returned")  # pragma: no cover


def _extract(records: list[dict[str, Any]], name: str) -> tuple[list[Any], np.ndarray | None]:
    """One feature of every record; the mask marks records without the key (absent, not null)."""
    try:
        return list(map(operator.itemgetter(name), records)), None
    except KeyError:
        present = np.fromiter(map(operator.contains, records, repeat(name)), dtype=bool, count=len(records))
        return list(map(dict.get, records, repeat(name))), ~present


def _typed_column(spec: FeatureSpec, column: pa.ChunkedArray, text: bool) -> tuple[Any, list[tuple[int, str]]]:
    """Check one file column: numbers with numpy, anything else value by value."""
    if text:
        converted = _from_text(spec, column)
        if isinstance(converted, tuple):  # Python values, one type or several
            values, absent = converted
            return check_column(spec, values, absent if absent.any() else None)
        column = converted
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    absent = pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        filled = column.fill_null(False if pa.types.is_boolean(kind) else 0).to_numpy(zero_copy_only=False)
        if pa.types.is_floating(kind) and absent.any():
            filled = np.where(absent, 0.0, filled)  # NaN is a missing value, as in pandas
        return _numbers(spec, filled, absent)
    values = column.to_pylist()
    return check_column(spec, values, absent if absent.any() else None)


def _numbers(spec: FeatureSpec, values: np.ndarray, absent: np.ndarray) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The matrix checks (numpy, the same rules as ``convert``), with missing values as absent fields."""
    out, failures = CHECKS[spec.kind](spec, values)
    has_absent = bool(absent.any())
    errors: list[tuple[int, str]] = []
    for mask, message in failures:
        errors += [(i, message) for i in np.flatnonzero(mask & ~absent if has_absent else mask).tolist()]
    if has_absent and spec.required:
        errors += [(i, REQUIRED) for i in np.flatnonzero(absent).tolist()]
    if out is None:  # every value present failed: the column holds only the absent ones' None
        return build_array(spec, [None] * len(values)), errors
    if has_absent:
        out = out.astype(np.float64 if spec.kind in ("float", "int") else object)
        out[absent] = np.nan if spec.kind in ("float", "int") else None
    return out, errors


def _from_text(spec: FeatureSpec, column: pa.ChunkedArray) -> pa.ChunkedArray | tuple[list[Any], np.ndarray]:
    """Turn CSV text into the values it spells for this feature; what spells nothing stays text.

    Numbers are cast by pyarrow when the whole column spells them, else converted value by value.
    """
    if spec.kind in ("float", "int"):
        for kind in ((pa.int64(), pa.float64()) if spec.kind == "int" else (pa.float64(),)):
            try:
                return pc.cast(column, kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        return _mapped(column, _number)
    if spec.kind == "bool":
        return _mapped(column, lambda text: BOOLEAN_TEXT.get(text.lower(), text))
    if spec.kind == "category":
        return _mapped(column, lambda text: _code(spec, text))
    return column


def _number(text: str) -> Any:
    """A number as JSON would spell it; text that is none stays text (and fails as such)."""
    if "_" in text:  # Python reads 1_000; JSON and CSV writers do not write it
        return text
    if INTEGER_TEXT.fullmatch(text.strip()):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return None if number != number else number  # NaN is a missing value


def _code(spec: FeatureSpec, text: str) -> Any:
    """A category as declared: the text itself, or the integer it spells when the integer is declared."""
    if spec.categories is None or text in spec.categories:
        return text
    if INTEGER_TEXT.fullmatch(text) and int(text) in spec.categories:
        return int(text)
    return text


def _mapped(column: pa.ChunkedArray, convert: Any) -> tuple[list[Any], np.ndarray]:
    """Apply ``convert`` to each distinct text once; return the values and the missing ones' mask."""
    encoded = column.combine_chunks().dictionary_encode()
    texts = encoded.dictionary.to_pylist()
    lookup = np.empty(len(texts) + 1, dtype=object)
    lookup[:-1] = [convert(text) for text in texts]
    lookup[-1] = None
    indices = encoded.indices.fill_null(len(texts)).to_numpy(zero_copy_only=False)
    values = lookup[indices]
    return values.tolist(), np.equal(values, None)


def _array(spec: FeatureSpec, values: np.ndarray | list[Any]) -> np.ndarray:
    return values if isinstance(values, np.ndarray) else build_array(spec, values)


def _take(spec: FeatureSpec, values: np.ndarray | list[Any], rows: np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values[rows]
    return build_array(spec, [values[i] for i in rows.tolist()])


def _settle(spec: FeatureSpec, array: np.ndarray) -> np.ndarray:
    """Give the good rows the dtype the API builds for them alone (a null in a rejected row made ints float)."""
    if spec.kind == "int" and array.dtype.kind == "f" and not np.isnan(array).any():
        return array.astype(np.int64)
    if spec.kind == "bool" and array.dtype == object and not any(v is None for v in array.tolist()):
        return array.astype(bool)
    return array
