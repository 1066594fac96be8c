"""Check a numeric matrix (rows x features, in schema order) column by column with numpy.

The ``matrix`` layout is what tensor protocols carry (Open Inference Protocol V2): one 2-D
array of numbers or booleans, checked here without per-value Python. Each rule of
``service.serving.schemas.convert`` is a numpy expression over a whole column, applied in the
same order, so a matrix and the same values sent as rows get the same messages and the same
arrays (``tests/serving/test_validation.py`` holds both paths to that). A matrix holds no
nulls, so required and nullable never apply. Arrays of strings or objects are not handled here:
``service.serving.validation`` checks those as rows. No Flask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.serving.schemas import (
    INT64_MAX,
    NOT_A_BOOLEAN,
    NOT_A_CATEGORY,
    NOT_A_NUMBER,
    NOT_A_STRING,
    NOT_AN_INTEGER,
    NOT_FINITE,
    ROW_LENGTH,
    TOO_LARGE,
    FeatureSpec,
    ModelSchema,
)

#: dtype kinds a matrix may have: booleans, signed and unsigned integers, floats
NUMERIC_KINDS = "biuf"
TWO_63 = 2.0**63  # floats at or past this (or below its negative) are outside int64

# (row, field, messages), as service.serving.validation reports them
Error = tuple[int | None, str, list[str]]
# a column's output array (None when every value failed) and its failures as (mask, message)
Checked = tuple[np.ndarray | None, list[tuple[np.ndarray, str]]]


def check_matrix(model: ModelSchema, data: np.ndarray) -> tuple[list[Error], dict[str, np.ndarray], np.ndarray | None]:
    """Check every column of a 2-D numeric array; return the errors, the model's columns and, when
    every feature is a float, the block whose rows those columns are (features x rows, C order),
    which the prediction log stores as it is instead of copying the columns together again."""
    if data.dtype.kind not in NUMERIC_KINDS or data.ndim != 2:
        raise ValueError("check_matrix takes a 2-D array of numbers or booleans")
    width = len(model.specs)
    if data.shape[1] != width:
        message = ROW_LENGTH.format(count=width)
        return [(i, "instances", [message]) for i in range(data.shape[0])], {}, None
    checked, block = _float_block(model, data) if data.dtype.kind != "b" else ({}, None)
    if checked is CLEAN:  # every feature a float and every value fine: the block's rows are the columns
        return [], dict(zip(model.names, block, strict=True)), block
    errors: list[Error] = []
    columns: dict[str, np.ndarray] = {}
    for spec in model.specs:
        values, failures = checked[spec.name] if spec.name in checked else CHECKS[spec.kind](spec, data[:, spec.index])
        for mask, message in failures:
            errors += [(i, spec.name, [message]) for i in np.flatnonzero(mask).tolist()]
        if values is not None:
            columns[spec.name] = values
    whole = block if block is not None and len(checked) == width and not errors else None
    return errors, columns, whole


#: ``_float_block``'s answer when every feature is a float and every value passed: nothing per column to look at
CLEAN: dict[str, Checked] = {}


def _float_block(model: ModelSchema, data: np.ndarray) -> tuple[dict[str, Checked], np.ndarray | None]:
    """Check every float feature in one pass over a block: a few numpy calls, however many features.

    Returns the checked columns and the block they are rows of (features in schema order)."""
    specs, positions, lo, hi = model.float_block
    if not specs:
        return {}, None
    # features become rows of one C-ordered block, so each column handed on is contiguous
    block = np.ascontiguousarray(data[:, positions].T, dtype=np.float64)
    finite = np.isfinite(block)
    outside = finite & ((block < lo) | (block > hi))
    clean = finite.all() and not outside.any()
    if clean and len(specs) == len(model.specs):
        return CLEAN, block
    checked: dict[str, Checked] = {}
    for j, spec in enumerate(specs):
        failures = [] if clean else [(mask, message) for mask, message in
                                     ((~finite[j], NOT_FINITE), (outside[j], spec.range_message or "")) if mask.any()]
        checked[spec.name] = (block[j], failures)
    return checked, block


def _everywhere(column: np.ndarray, message: str) -> Checked:
    return None, [(np.ones(column.shape[0], dtype=bool), message)]


def _out_of_range(spec: FeatureSpec, values: np.ndarray, ok: np.ndarray) -> list[tuple[np.ndarray, str]]:
    bad = np.zeros(values.shape[0], dtype=bool)
    if spec.lo is not None:
        bad |= values < spec.lo
    if spec.hi is not None:
        bad |= values > spec.hi
    bad &= ok
    return [(bad, spec.range_message or "")] if bad.any() else []


def _float(spec: FeatureSpec, column: np.ndarray) -> Checked:
    if column.dtype.kind == "b":
        return _everywhere(column, NOT_A_NUMBER)
    values = column.astype(np.float64)
    infinite = ~np.isfinite(values)
    failures = [(infinite, NOT_FINITE)] if infinite.any() else []
    return values, failures + _out_of_range(spec, values, ~infinite)


def _int(spec: FeatureSpec, column: np.ndarray) -> Checked:
    kind = column.dtype.kind
    if kind == "b":
        return _everywhere(column, NOT_AN_INTEGER)
    failures = []
    if kind == "i":
        values, ok = column.astype(np.int64), np.ones(column.shape[0], dtype=bool)
    elif kind == "u":
        too_large = column > INT64_MAX
        ok = ~too_large
        values = np.where(ok, column, 0).astype(np.int64)
        failures.append((too_large, TOO_LARGE))
    else:  # floats: 4.0 is the integer 4, 4.7 is refused rather than truncated (as convert does)
        floats = column.astype(np.float64)
        not_integral = ~np.isfinite(floats) | (floats != np.trunc(floats))
        too_large = ~not_integral & ((floats >= TWO_63) | (floats < -TWO_63))
        ok = ~(not_integral | too_large)
        values = np.where(ok, floats, 0).astype(np.int64)
        failures += [(not_integral, NOT_AN_INTEGER), (too_large, TOO_LARGE)]
    failures = [(mask, message) for mask, message in failures if mask.any()]
    return values, failures + _out_of_range(spec, values, ok)


def _bool(spec: FeatureSpec, column: np.ndarray) -> Checked:
    if column.dtype.kind != "b":
        return _everywhere(column, NOT_A_BOOLEAN)
    return column.astype(bool), []


def _category(spec: FeatureSpec, column: np.ndarray) -> Checked:
    """Numeric category codes: integers, or floats that are exactly integers (2.0 is the code 2)."""
    kind = column.dtype.kind
    if kind == "b":
        return _everywhere(column, NOT_A_CATEGORY)
    failures = []
    if kind in "iu":
        codes = column.astype(object)  # Python ints, as the rows path keeps them
        ok = np.ones(column.shape[0], dtype=bool)
    else:
        floats = column.astype(np.float64)
        ok = np.isfinite(floats) & (floats == np.trunc(floats))
        if not ok.all():
            failures.append((~ok, NOT_A_CATEGORY))
        codes = np.empty(column.shape[0], dtype=object)
        small = ok & (np.abs(floats) < TWO_63)
        codes[small] = floats[small].astype(np.int64).astype(object)
        huge = np.flatnonzero(ok & ~small)
        codes[huge] = [int(value) for value in floats[huge].tolist()]  # rare: exact ints past int64
    if spec.categories is not None:
        # one membership test per distinct value, not per row
        distinct = set(codes[ok].tolist())
        unknown = [value for value in distinct if value not in spec.categories]
        if unknown:
            outside = ok & np.isin(codes, np.array(unknown, dtype=object))
            failures.append((outside, spec.choices_message or ""))
    return codes, failures


def _string(spec: FeatureSpec, column: np.ndarray) -> Checked:
    return _everywhere(column, NOT_A_STRING)


CHECKS: dict[str, Callable[[FeatureSpec, np.ndarray], Checked]] = {
    "float": _float, "int": _int, "bool": _bool, "category": _category, "string": _string,
}
