"""Turn a request's rows into numpy columns for the model, or one detailed 422.

``validate_rows`` takes rows as a codec decoded them (records, rows or columns of JSON
values; the envelope is the codec's job) and checks the values along one of two paths that
must agree exactly: small batches go through the per-model marshmallow schema; large batches
are checked column by column with C-level iteration (``map``, ``zip``, ``array``, numpy
comparisons) and no per-row Python loop. A column the fast checks cannot clear is re-checked
value by value with the same ``convert`` rule, so both paths report the same errors and build
the same arrays. The rows are assumed to hold only JSON types, as a JSON decoder produces
them. A fourth layout, ``matrix`` (a 2-D numpy array in schema order, as tensor protocols
send it), is checked with numpy alone by ``service.serving.matrix``, with the same messages and
arrays. Nothing here imports Flask.
"""

from __future__ import annotations

import heapq
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, NoReturn

import numpy as np
from marshmallow import ValidationError

from service.errors import ValidationFailed
from service.serving.columns import EXACT_FLOAT_INT, build_array, fast_column
from service.serving.matrix import NUMERIC_KINDS, check_matrix
from service.serving.schemas import (
    COLUMN_LENGTH,
    EMPTY,
    NOT_A_LIST,
    NULL,
    REQUIRED,
    ROW_LENGTH,
    UNKNOWN,
    FeatureSpec,
    ModelSchema,
    convert,
    model_schema,
)

MAX_REPORTED_ERRORS = 50
#: Zeros and ones (where a boolean hides among numbers) are looked at one by one; when they are more
#: than this share of the values, every value's type is, in one C pass (cheaper per value).
SUSPECT_SHARE = 0.25
#: Up to this many values a matrix's booleans are found by type, not by numpy masks (cheaper for a few rows).
SMALL_CELLS = 512
#: Unknown field names we repeat back to the client; anything else is described, not echoed.
SAFE_FIELD_RE = re.compile(r"[A-Za-z0-9 _.()\[\]/-]{1,64}")

# (row or None, field or None, messages): rows are 0-based; None means the request or a column.
Error = tuple[int | None, Any, list[str]]


@dataclass(frozen=True)
class ValidatedBatch:
    """A request's rows after validation: one numpy array per feature, in feature order."""

    columns: dict[str, np.ndarray]
    n_rows: int
    #: float64 (features x rows, C order) whose rows ARE ``columns`` in feature order, when every
    #: feature is a float checked as one matrix; None otherwise. The record stores it as it is.
    block: np.ndarray | None = None


def validate_rows(layout: str, data: Any, features: list[dict[str, Any]], *,
                  vectorized_min_rows: int) -> ValidatedBatch:
    """Validate decoded rows against the model's features and build its columns."""
    model = model_schema(features)
    if layout in ("rows", "records") and model.numeric:
        matrix = _numeric_matrix(model, layout, data)
        if matrix is not None:
            layout, data = "matrix", matrix
    if layout == "matrix":
        if data.dtype.kind in NUMERIC_KINDS:
            errors, columns, block = check_matrix(model, data)
            _raise_if(errors, model)
            return ValidatedBatch(columns=columns, n_rows=data.shape[0], block=block)
        layout, data = "rows", data.tolist()  # strings or objects: Python values either way
    if layout == "columns":
        n_rows = max((len(column) for column in data.values() if type(column) is list), default=0)
    else:
        n_rows = len(data)
    check = _check_columnwise if n_rows >= vectorized_min_rows else _check_with_schema
    columns, n_rows = check(model, layout, data)
    return ValidatedBatch(columns=columns, n_rows=n_rows)


def raise_errors(errors: list[Error], positions: dict[str, int], *, count: int | None = None) -> NoReturn:
    """Raise ValidationFailed with the first errors by (row, feature order) and a one-line summary.

    ``count`` is the number of errors found, when ``errors`` holds only the first of them.
    """

    def order(error: Error) -> tuple[Any, ...]:
        row, field, _ = error
        if field is None:
            rank: tuple[Any, ...] = (0, 0, "")
        elif field in positions:
            rank = (1, positions[field], "")
        else:
            rank = (2, 0, str(field))
        return (row is not None, row or 0, *rank)

    shown = heapq.nsmallest(MAX_REPORTED_ERRORS, errors, key=order)
    entries = [{"row": row, "field": _clip(field), "messages": messages} for row, field, messages in shown]
    first, count = entries[0], len(errors) if count is None else count
    where = "" if first["field"] is None else f"field '{first['field']}': "
    if any(row is None for row, _, _ in errors):
        message = f"{_plural(count, 'error')} in the request; first: {where}{first['messages'][0]}"
    else:
        rows = len({row for row, _, _ in errors})
        message = (
            f"{_plural(count, 'invalid value')} in {_plural(rows, 'row')}; "
            f"first: row {first['row']}, {where}{first['messages'][0]}"
        )
    raise ValidationFailed(message, details={"errors": entries, "error_count": count})


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _clip(field: Any) -> Any:
    # Unknown keys come from the client: echo only a short, plain name, never markup or control text.
    if isinstance(field, str) and not SAFE_FIELD_RE.fullmatch(field):
        return "(an unknown field with an unusual name)"
    return field


def flatten_messages(messages: Any, row: int | None = None, field: str | None = None) -> list[Error]:
    """Turn marshmallow's nested envelope messages into (row, field, messages) entries."""
    if not isinstance(messages, dict):
        return [(row, field, list(messages))]
    out: list[Error] = []
    for key, value in messages.items():
        if isinstance(key, int):
            out += flatten_messages(value, key, field)
        elif key == "_schema":
            out += flatten_messages(value, row, field)
        else:
            out += flatten_messages(value, row, key if field is None else f"{field}.{key}")
    return out


# -- rows of plain numbers: one matrix --------------------------------------------------------


def _numeric_matrix(model: ModelSchema, layout: str, data: list[Any]) -> np.ndarray | None:
    """Rows (or records with exactly the model's keys) of plain ints and floats as one float64 matrix.

    A model whose features are all numbers then checks them column by column with numpy
    (``check_matrix``), at any batch size, with the messages and arrays of the other paths. None
    (check them the usual way) for anything else: a row of another width, a missing or unknown
    key, a null, a string, a boolean, or an integer too large to be exact in a float64.
    """
    width = len(model.specs)
    if not data or set(map(len, data)) != {width}:
        return None
    if layout == "records":
        if width < 2:
            return None  # itemgetter of one name gives the value, not a row
        try:
            data = list(map(operator.itemgetter(*model.names), data))
        except KeyError:
            return None
    try:  # numpy's own conversion, as a plain app's np.array(instances): None, strings, containers give no numbers
        matrix = np.array(data)
    except (TypeError, ValueError, OverflowError):
        return None
    if matrix.dtype.kind not in "fi" or matrix.ndim != 2:
        return None
    flat = matrix.reshape(-1).astype(np.float64, copy=False)
    # numpy takes a boolean among numbers as 0 or 1, which a float feature refuses: look for booleans,
    # in a small batch among every value's type (a few C calls), else among the cells that are 0 or 1
    if len(flat) <= SMALL_CELLS:
        if bool in set(map(type, chain.from_iterable(data))):
            return None
        suspects = flat[:0]
    else:
        suspects = np.flatnonzero((flat == 0) | (flat == 1))
    if len(suspects) > SUSPECT_SHARE * len(flat):
        if bool in set(map(type, chain.from_iterable(data))):
            return None
    elif len(suspects) and bool in {type(data[k // width][k % width]) for k in suspects.tolist()}:
        return None
    if not (np.abs(flat) < EXACT_FLOAT_INT).all():  # an int there may not round-trip (and no inf or nan)
        return None
    return flat.reshape(len(data), width)


# -- layouts: shared structural checks ---------------------------------------------------------


def _row_lengths(model: ModelSchema, rows: list[list[Any]]) -> tuple[list[Error], list[int] | None]:
    """Report rows of the wrong length; return the indices of the others (None when all are fine)."""
    width = len(model.specs)
    if set(map(len, rows)) == {width}:
        return [], None
    message = ROW_LENGTH.format(count=width)
    errors: list[Error] = [(i, "instances", [message]) for i, row in enumerate(rows) if len(row) != width]
    return errors, [i for i, row in enumerate(rows) if len(row) == width]


def _column_layout(model: ModelSchema, inputs: dict[Any, Any]) -> tuple[list[Error], bool]:
    """Report unknown, missing and malformed columns; the flag says whether values can be checked."""
    errors: list[Error] = [(None, key, [UNKNOWN]) for key in inputs if key not in model.positions]
    lengths = set()
    malformed = False
    for spec in model.specs:
        if spec.name not in inputs:
            if spec.required:
                errors.append((None, spec.name, [REQUIRED]))
            continue
        column = inputs[spec.name]
        if type(column) is not list or not column:
            errors.append((None, spec.name, [NOT_A_LIST if type(column) is not list else EMPTY]))
            malformed = True
        else:
            lengths.add(len(column))
    if len(lengths) > 1:
        errors.append((None, "inputs", [COLUMN_LENGTH]))
    return errors, not malformed and len(lengths) == 1


def _raise_if(errors: list[Error], model: ModelSchema) -> None:
    if errors:
        raise_errors(errors, model.positions)


# -- the marshmallow path -----------------------------------------------------------------------


def _check_with_schema(model: ModelSchema, layout: str, data: Any) -> tuple[dict[str, np.ndarray], int]:
    """Validate row by row with the model's records schema (cheap for small batches)."""
    errors: list[Error] = []
    kept: list[int] | None = None
    partial: tuple[str, ...] = ()
    if layout == "records":
        records = data
    elif layout == "rows":
        errors, kept = _row_lengths(model, data)
        names = model.names
        records = [dict(zip(names, data[i], strict=False)) for i in (range(len(data)) if kept is None else kept)]
    else:
        errors, checkable = _column_layout(model, data)
        if not checkable:
            raise_errors(errors, model.positions)
        present = [spec for spec in model.specs if spec.name in data]
        names = tuple(spec.name for spec in present)
        records = [dict(zip(names, values, strict=False)) for values in zip(*(data[name] for name in names), strict=False)]
        # Missing columns were reported once above; do not report them again on every row.
        partial = tuple(spec.attr for spec in model.specs if spec.required and spec.name not in data)
    try:
        loaded = model.records.load(records, many=True, partial=partial or None)
    except ValidationError as exc:
        for i, row_errors in exc.messages.items():  # type: ignore[union-attr]
            row = i if kept is None else kept[i]
            errors += [(row, field, list(messages)) for field, messages in row_errors.items()]
    _raise_if(errors, model)
    columns = {spec.name: build_array(spec, [record.get(spec.attr) for record in loaded]) for spec in model.specs}
    return columns, len(loaded)


# -- the vectorised path ------------------------------------------------------------------------


def _check_columnwise(model: ModelSchema, layout: str, data: Any) -> tuple[dict[str, np.ndarray], int]:
    """Validate column by column with C-level iteration; Python loops only build error messages."""
    errors: list[Error] = []
    kept: list[int] | None = None
    if layout == "rows":
        errors, kept = _row_lengths(model, data)
        rows = data if kept is None else [data[i] for i in kept]
        n_rows = len(rows)
        columns: list[Any] = list(zip(*rows, strict=False)) if rows else [() for _ in model.specs]
        missing: list[np.ndarray | None] = [None] * len(model.specs)
    elif layout == "records":
        n_rows = len(data)
        columns, missing = [], []
        for spec in model.specs:
            column, absent = _extract(data, spec.name)
            columns.append(column)
            missing.append(absent)
        errors = _unknown_keys(model, data, missing)
    else:
        errors, checkable = _column_layout(model, data)
        if not checkable:
            raise_errors(errors, model.positions)
        n_rows = len(next(data[spec.name] for spec in model.specs if spec.name in data))
        columns, missing = [], []
        for spec in model.specs:
            if spec.name in data:
                columns.append(data[spec.name])
                missing.append(None)
            else:  # reported above when required; otherwise a column of nulls
                columns.append([None] * n_rows if not spec.required else None)
                missing.append(np.ones(n_rows, dtype=bool) if not spec.required else None)
    out: dict[str, np.ndarray] = {}
    for spec, column, absent_mask in zip(model.specs, columns, missing, strict=False):
        if column is None:
            continue
        array_ = fast_column(spec, column, absent_mask)
        if array_ is None:
            column_errors, values = _slow_column(spec, column, absent_mask)
            errors += [(i if kept is None else kept[i], spec.name, [m]) for i, m in column_errors]
            array_ = build_array(spec, values)
        out[spec.name] = array_
    _raise_if(errors, model)
    return out, n_rows


def _extract(records: list[dict[str, Any]], name: str) -> tuple[list[Any], np.ndarray | None]:
    """Pull one feature out of every record; the mask marks records without the key."""
    try:
        return list(map(operator.itemgetter(name), records)), None
    except KeyError:
        present = np.fromiter(map(operator.contains, records, repeat(name)), dtype=bool, count=len(records))
        return list(map(dict.get, records, repeat(name))), ~present


def _unknown_keys(model: ModelSchema, records: list[dict[str, Any]], missing: list[np.ndarray | None]) -> list[Error]:
    """Find keys outside the schema by counting: a record has extras iff it has more keys than known."""
    known = np.full(len(records), len(model.specs))
    for absent in missing:
        if absent is not None:
            known -= absent
    sizes = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    extra = np.flatnonzero(sizes > known)
    positions = model.positions
    return [(int(i), key, [UNKNOWN]) for i in extra.tolist() for key in records[i] if key not in positions]


def check_column(spec: FeatureSpec, column: Sequence[Any],
                 absent: np.ndarray | None) -> tuple[np.ndarray | list[Any], list[tuple[int, str]]]:
    """Check one feature's values as the records path does, without raising.

    Returns the column's array and no failures when every value passes, else its values (None
    where one failed) and the failures as (row, message): a batch job rejects the failing rows
    and goes on with the others, where a request is refused whole.
    """
    array_ = fast_column(spec, column, absent)
    if array_ is not None:
        return array_, []
    errors, values = _slow_column(spec, column, absent)
    return values, errors


def _slow_column(spec: FeatureSpec, column: Sequence[Any], absent: np.ndarray | None) -> tuple[list[Any], list[Any]]:
    """Check a column value by value with the marshmallow rules; used once a problem is known."""
    errors: list[tuple[int, str]] = []
    values: list[Any] = []
    absent_list = [False] * len(column) if absent is None else absent.tolist()
    for i, (value, is_absent) in enumerate(zip(column, absent_list, strict=False)):
        if value is None:
            if is_absent and spec.required:
                errors.append((i, REQUIRED))
            elif not is_absent and not spec.nullable:
                errors.append((i, NULL))
            values.append(None)
            continue
        try:
            values.append(convert(spec, value))
        except ValidationError as exc:
            errors.append((i, exc.messages[0]))  # type: ignore[index]
            values.append(None)
    return errors, values
