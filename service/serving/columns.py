"""Prove a whole column clean with C-level checks, or hand it back to be checked value by value.

``fast_column`` is the vectorised path's fast lane: ``array``, numpy comparisons and set
arithmetic decide whether every value of a column passes its feature's rule; when one might not,
it answers None and ``service.serving.validation`` re-checks the column with ``convert``, so both
paths report the same errors. ``build_array`` gives every path the same output dtypes. No Flask.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.serving.schemas import FeatureSpec

EXACT_FLOAT_INT = 2**53  # integers below this survive a round trip through float64
NONE_TYPE = type(None)
NUMBER_TYPES = {"float": {float, int}, "int": {int, float}, "bool": {bool}, "category": {str, int}, "string": {str}}


def build_array(spec: FeatureSpec, values: Sequence[Any]) -> np.ndarray:
    """Build a feature's output column from clean values (None for null), with the agreed dtypes."""
    has_null = None in values
    if spec.kind == "float" or (spec.kind == "int" and has_null):
        return np.array(values, dtype=np.float64)
    if spec.kind == "int":
        return np.array(values, dtype=np.int64)
    if spec.kind == "bool" and not has_null:
        return np.array(values, dtype=bool)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def fast_column(spec: FeatureSpec, column: Sequence[Any], absent: np.ndarray | None) -> np.ndarray | None:
    """Return the column's array when C-level checks prove it clean, else None (check it slowly)."""
    if absent is None and spec.kind in ("float", "int"):
        dense = _dense_numbers(spec, column)
        if dense is not None:
            return dense
    kinds = set(map(type, column))
    if spec.kind == "category" and float in kinds:
        column = _integral_codes(column, kinds)
        if column is None:
            return None
        kinds = set(map(type, column))
    has_null = NONE_TYPE in kinds
    if has_null:
        kinds.discard(NONE_TYPE)
        n_absent = 0 if absent is None else int(np.count_nonzero(absent))
        if n_absent and spec.required:
            return None
        if not spec.nullable and column.count(None) > n_absent:
            return None
    if not kinds <= NUMBER_TYPES[spec.kind]:
        return None
    if spec.kind == "float":
        return _float_column(spec, column, has_null)
    if spec.kind == "int":
        return _int_column(spec, column, has_null, kinds)
    if spec.categories is not None:
        seen = set(column)
        seen.discard(None)
        if not spec.categories.issuperset(seen):  # hashed (pii) categories hash each distinct value once
            return None
    return build_array(spec, column)


def _integral_codes(column: Sequence[Any], kinds: set[type]) -> list[Any] | None:
    """Turn a numeric category column's exact floats (2.0) into the integers they are, in C."""
    if not kinds <= {int, float, NONE_TYPE}:
        return None  # strings beside floats: rare, and the slow path reports each value
    try:
        floats = np.array(column, dtype=np.float64)  # None becomes nan
    except OverflowError:
        return None
    nulls = np.isnan(floats)
    if np.count_nonzero(nulls) != column.count(None) or np.isinf(floats).any():
        return None
    if (np.abs(floats) >= EXACT_FLOAT_INT).any() or not np.array_equal(floats, np.trunc(floats), equal_nan=True):
        return None
    codes = np.where(nulls, 0, floats).astype(np.int64).astype(object)
    codes[nulls] = None
    return codes.tolist()


def _dense_numbers(spec: FeatureSpec, column: Sequence[Any]) -> np.ndarray | None:
    """Convert an all-number column through ``array`` (which refuses None, str and containers)."""
    try:
        values = np.frombuffer(array("d" if spec.kind == "float" else "q", column), dtype=_dtype(spec))
    except (TypeError, OverflowError):
        return None
    # array() accepts bools as 0/1 (and "q" accepts nothing else odd): look only at those cells.
    suspects = np.flatnonzero((values == 0) | (values == 1))
    if suspects.size and bool in set(map(type, map(column.__getitem__, suspects.tolist()))):
        return None
    if spec.kind == "float" and not np.isfinite(values).all():
        return None
    return values if _in_range(spec, values) else None


def _dtype(spec: FeatureSpec) -> type[np.generic]:
    return np.float64 if spec.kind == "float" else np.int64


def _float_column(spec: FeatureSpec, column: Sequence[Any], has_null: bool) -> np.ndarray | None:
    try:
        values = np.array(column, dtype=np.float64)  # None becomes nan
    except OverflowError:
        return None
    if has_null:
        if np.isinf(values).any() or np.count_nonzero(np.isnan(values)) != column.count(None):
            return None
    elif not np.isfinite(values).all():
        return None
    return values if _in_range(spec, values) else None


def _int_column(spec: FeatureSpec, column: Sequence[Any], has_null: bool, kinds: set[type]) -> np.ndarray | None:
    if kinds <= {int} and not has_null:
        try:
            values = np.array(column, dtype=np.int64)
        except OverflowError:
            return None
        return values if _in_range(spec, values) else None
    # Floats or nulls: go through float64, where only integers below 2**53 are exact.
    try:
        floats = np.array(column, dtype=np.float64)
    except OverflowError:
        return None
    nulls = np.isnan(floats)
    if np.count_nonzero(nulls) != (column.count(None) if has_null else 0) or np.isinf(floats).any():
        return None
    if (np.abs(floats) >= EXACT_FLOAT_INT).any() or not np.array_equal(floats, np.trunc(floats), equal_nan=True):
        return None
    if any(bound is not None and abs(bound) >= EXACT_FLOAT_INT for bound in (spec.lo, spec.hi)):
        return None
    if not _in_range(spec, floats):
        return None
    return floats if has_null else floats.astype(np.int64)


def _in_range(spec: FeatureSpec, values: np.ndarray) -> bool:
    # nan (a null) compares False both ways, as a null skips the range check on the schema path.
    if spec.lo is not None and (values < spec.lo).any():
        return False
    return not (spec.hi is not None and (values > spec.hi).any())
