"""A window read back: stored ``prediction_batches`` columns turned into the numpy arrays the
monitoring maths takes (float64 with NaN, or objects with None, for what is missing).

Pure numpy and orjson: the prediction log does the reading; no store, no Flask. A column comes
as a JSON list (older records, strings) or an array over a record's bytes (``service.store.columns``);
both give the same values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.models.artifacts import NUMERIC_TYPES
from service.store.columns import BINARY_KINDS, python_values


@dataclass(frozen=True)
class Stored:
    """One stored batch, read back: row-aligned columns, each a JSON list or an array over the stored bytes."""

    rows: int
    inputs: dict[str, list[Any] | np.ndarray]  # feature -> values
    outputs: list[Any] | np.ndarray
    probabilities: list[Any] | np.ndarray  # a list per row (or None), or a rows x classes matrix
    #: the inputs as one float features x rows block, when stored so (its rows are ``inputs``' values),
    #: with the features' names in order: a window of such records takes its columns in one step
    block: np.ndarray | None = None
    block_names: tuple[str, ...] = ()


def block_columns(features: list[dict[str, Any]], stored: list[Stored], index: np.ndarray,
                  hidden: frozenset[str]) -> dict[str, np.ndarray] | None:
    """The window's numeric columns taken at once from records that are all blocks of the same
    features (what ``feature_column`` gives each, without a Python step per record and feature),
    or None when they are not; other features are left to ``feature_column``."""
    if not stored or any(found.block is None or found.block.shape[1] != found.rows for found in stored) \
            or len({found.block_names for found in stored}) != 1:
        return None
    names = stored[0].block_names
    whole = np.concatenate([*(found.block for found in stored), np.full((len(names), 1), np.nan)], axis=1)
    position = {name: j for j, name in enumerate(names)}
    return {f["name"]: whole[position[f["name"]]][index] for f in features
            if f["name"] in position and f["name"] not in hidden and f.get("type") in NUMERIC_TYPES}


def loads_many(texts: list[str]) -> list[Any]:
    # One parse of a joined array is about twice as fast as one orjson.loads per row.
    return orjson.loads("[" + ",".join(texts) + "]") if texts else []


def gather(parts: list[list[Any] | np.ndarray], index: np.ndarray, *, matrix: bool = False) -> list[Any] | np.ndarray:
    """Pick ``index`` from the concatenation of ``parts`` and one trailing None (missing).

    When every part is a numeric array (binary records) the answer is an array, picked without
    a Python object per value; otherwise a list, with arrays read as JSON would have read them.
    """
    total = sum(len(part) for part in parts)
    ndim = 2 if matrix else 1
    if parts and all(isinstance(part, np.ndarray) and part.dtype.kind in BINARY_KINDS and part.ndim == ndim
                     for part in parts) \
            and len({part.shape[1:] for part in parts}) == 1 and (not index.size or int(index.max()) < total):
        return np.concatenate(parts)[index]
    flat = [value for part in parts for value in (part.tolist() if matrix and isinstance(part, np.ndarray)
                                                  else python_values(part))]
    flat.append(None)
    return [flat[i] for i in index.tolist()]


def feature_column(feature: dict[str, Any], stored: Iterable[Stored], index: np.ndarray, hidden: bool) -> np.ndarray:
    """One feature's window column: float64 with NaN, or objects with None, for missing values."""
    is_number = feature.get("type") in NUMERIC_TYPES
    if hidden:
        return np.full(len(index), np.nan) if is_number else np.full(len(index), None, dtype=object)
    parts = []
    for found in stored:
        values = found.inputs.get(feature["name"])
        if values is None or len(values) != found.rows or getattr(values, "ndim", 1) != 1:
            # not stored (pii without a key, another schema)
            parts.append(np.full(found.rows, np.nan) if is_number else np.full(found.rows, None, dtype=object))
        else:
            parts.append(numeric(values) if is_number else objects(values))
    parts.append(np.full(1, np.nan) if is_number else np.full(1, None, dtype=object))
    return np.concatenate(parts)[index]


def numeric(values: list[Any] | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64)  # bool and int as the numbers they are; a copy, never the stored bytes
    try:
        return np.array(values, dtype=np.float64)  # None -> NaN
    except (TypeError, ValueError):  # a value of another type (the schema changed): treat it as missing
        return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in values],
                        dtype=np.float64)


def objects(values: list[Any] | np.ndarray) -> np.ndarray:
    values = python_values(values)  # Python values, None for NaN: as a JSON record reads
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def as_array(values: list[Any] | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if any(isinstance(v, (str, list, dict)) or v is None for v in values):
        return objects(values)  # string classes stay Python strings, as the runtime gives them
    return np.array(values)


def probability_matrix(rows: list[list[Any] | None] | np.ndarray) -> np.ndarray | None:
    if isinstance(rows, np.ndarray):
        return np.asarray(rows, dtype=np.float64) if rows.ndim == 2 else None
    present = [i for i, row in enumerate(rows) if row is not None]
    if not present:
        return None
    width = len(rows[present[0]])
    if any(len(rows[i]) != width for i in present):
        return None  # not one class list: no matrix to give
    out = np.full((len(rows), width), np.nan)
    out[present] = np.array([rows[i] for i in present], dtype=np.float64)
    return out


def sparse(texts: list[str | None], n: int) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    present = [i for i, text in enumerate(texts) if text is not None]
    for i, value in zip(present, loads_many([texts[i] for i in present]), strict=True):
        out[i] = value
    return out
