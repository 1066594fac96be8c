"""Rows built from a model itself, where another backend is most likely to answer differently.

The hold-out rarely lands on a split threshold or far out in a linear model's range, yet those
are where rounding changes an answer: a row one ulp past a threshold goes down the other branch,
and a large row makes sums and saturating links lose digits. ``probes`` returns such rows, each
tagged with its kind, for the parity check to compare on. Only numeric features are moved;
values stay within the bounds the schema declares, and integer features stay integers, so every
probe is a row a client could send. No Flask.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from service.explain.columns import Unsupported, origins, transform
from service.models import onnx_trees

THRESHOLD, MAGNITUDE, MISSING = "threshold", "magnitude", "missing"
#: Splits probed per model: every split of the bench's 100-tree forest (~16,000); past this many,
#: evenly spread over all of them. Three to six rows each; packaging time grows with it.
MAX_SPLITS = 20_000
#: Large-magnitude rows: each numeric feature, then all at once, at these multiples of its
#: largest hold-out magnitude (and their negatives).
MAGNITUDES = (10.0, 1e3)
#: A bracket wide enough for any split, narrow enough that scaling it stays finite.
FAR = 1e150
_SIGN = np.uint64(1 << 63)


def probes(model: Any, X: pd.DataFrame, features: list[dict[str, Any]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Return probe rows shaped like ``X`` (same columns and dtypes) and the kind of each."""
    frames, kinds = [], []
    try:
        thresholds = threshold_rows(model, X, features)
    except Exception:  # the preprocessing is user code: a transform that fails far out probes nothing
        thresholds = None
    for kind, frame in ((THRESHOLD, thresholds), (MAGNITUDE, magnitude_rows(X, features)),
                        (MISSING, missing_rows(X, features))):
        if frame is not None and len(frame):
            frames.append(frame)
            kinds.append(np.full(len(frame), kind, dtype=object))
    if not frames:
        return X.iloc[:0], np.empty(0, dtype=object)
    return pd.concat(frames, ignore_index=True), np.concatenate(kinds)


def threshold_rows(model: Any, X: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame | None:
    """Rows at each split threshold and one ulp either side, found in the input's own units.

    Through preprocessing the threshold is in transformed units, so the input value where the
    model's own arithmetic crosses it is found by bisection over the doubles (64 steps, every
    split at once); scikit-learn's own trees compare float32 inputs, and the bisection does too.
    """
    steps, final = onnx_trees.final_step(model)
    found = splits(final)
    if found is None or not len(X):
        return None
    columns, thresholds = found
    try:
        origin = origins(steps, len(features)) if steps else np.arange(len(features))
    except Unsupported:
        return None
    movable = np.array([_numeric(f) for f in features])
    keep = (columns < len(origin)) & np.isfinite(thresholds)
    columns, thresholds = columns[keep], thresholds[keep]
    keep = movable[origin[columns]]
    columns, thresholds = columns[keep], thresholds[keep]
    if not len(columns):
        return None
    if len(columns) > MAX_SPLITS:
        picked = np.linspace(0, len(columns) - 1, MAX_SPLITS).astype(np.int64)
        columns, thresholds = columns[picked], thresholds[picked]
    base = X.iloc[np.arange(len(columns)) % len(X)].reset_index(drop=True)
    names = [f["name"] for f in features]
    inputs = origin[columns]
    float32 = not isinstance(final, onnx_trees.HIST)

    def left(values: np.ndarray) -> np.ndarray:
        frame = _with_values(base, names, inputs, values)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = transform(steps, _model_input(model, frame))[np.arange(len(values)), columns]
            data = data.astype(np.float32).astype(np.float64) if float32 else data
        return data <= thresholds

    low, high = np.full(len(columns), -FAR), np.full(len(columns), FAR)
    low_side = left(low)
    crosses = low_side != left(high)
    lo, hi = _key(low), _key(high)
    for _ in range(64):
        mid = lo + (hi - lo) // np.uint64(2)
        same = left(_value(mid)) == low_side
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    at = _value(lo)
    rows = []
    for values in (at, _value(hi), np.nextafter(at, -np.inf)):
        rows.append(_with_values(base, names, inputs, values)[crosses])
    if not steps:  # the threshold itself, as the trees store it
        for values in (thresholds, np.nextafter(thresholds, np.inf), np.nextafter(thresholds, -np.inf)):
            rows.append(_with_values(base, names, inputs, values))
    return _servable(pd.concat(rows, ignore_index=True), X, features)


def magnitude_rows(X: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame | None:
    """Rows with one numeric feature (then all of them) far out: where sums and links lose digits."""
    numeric = [f["name"] for f in features if _numeric(f)]
    if not numeric or not len(X):
        return None
    base = X.iloc[[0]]
    scale = {name: max(float(np.nanmax(np.abs(X[name].to_numpy(dtype=np.float64)), initial=0.0)), 1.0)
             for name in numeric}
    rows = []
    for factor in (*MAGNITUDES, *(-m for m in MAGNITUDES)):
        for name in numeric:
            rows.append(base.assign(**{name: factor * scale[name]}))
        rows.append(base.assign(**{name: factor * scale[name] for name in numeric}))
    return _servable(pd.concat(rows, ignore_index=True), X, features)


def missing_rows(X: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame | None:
    """One row per nullable numeric feature with that feature missing (trees route NaN apart)."""
    nullable = [f["name"] for f in features if _numeric(f) and f.get("nullable")]
    if not nullable or not len(X):
        return None
    base = X.iloc[[0]]
    return pd.concat([base.assign(**{name: np.nan}) for name in nullable], ignore_index=True)


def splits(final: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Every split of a tree ensemble: the column it reads and its threshold; None for other models."""
    if not isinstance(final, onnx_trees.SUPPORTED):
        return None
    if isinstance(final, onnx_trees.HIST):
        nodes = [p.nodes for predictors in final._predictors for p in predictors]
        nodes = [n[(n["is_leaf"] == 0) & (n["is_categorical"] == 0)] for n in nodes]
        return (np.concatenate([n["feature_idx"] for n in nodes]).astype(np.int64),
                np.concatenate([n["num_threshold"] for n in nodes]).astype(np.float64))
    estimators = [final] if isinstance(final, onnx_trees.SINGLE_TREES) else list(np.ravel(final.estimators_))
    trees = [e.tree_ for e in estimators]
    inner = [t.children_left >= 0 for t in trees]
    return (np.concatenate([t.feature[i] for t, i in zip(trees, inner, strict=True)]).astype(np.int64),
            np.concatenate([t.threshold[i] for t, i in zip(trees, inner, strict=True)]).astype(np.float64))


def _servable(frame: pd.DataFrame, X: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame:
    """Clip to declared bounds, make integer features integers again, and restore ``X``'s dtypes."""
    for f in features:
        if not _numeric(f):
            continue
        values = frame[f["name"]].to_numpy(dtype=np.float64, copy=True)
        with np.errstate(invalid="ignore"):
            values = np.clip(values, f.get("min") if f.get("min") is not None else -np.inf,
                             f.get("max") if f.get("max") is not None else np.inf)
        integer = f["type"] == "int" or pd.api.types.is_integer_dtype(X[f["name"]].dtype)
        if integer:
            values = np.clip(np.round(values), -(2.0 ** 53), 2.0 ** 53)
        frame[f["name"]] = values
        if integer and not np.isnan(values).any() and pd.api.types.is_integer_dtype(X[f["name"]].dtype):
            frame[f["name"]] = values.astype(X[f["name"]].dtype)
    return frame.drop_duplicates(ignore_index=True)


def _with_values(base: pd.DataFrame, names: list[str], inputs: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    frame = base.copy()
    for j in np.unique(inputs):
        column = frame[names[j]].to_numpy(dtype=np.float64, copy=True)
        mask = inputs == j
        column[mask] = values[mask]
        frame[names[j]] = column
    return frame


def _model_input(model: Any, frame: pd.DataFrame) -> Any:
    return frame if hasattr(model, "feature_names_in_") else frame.to_numpy()


def _numeric(feature: dict[str, Any]) -> bool:
    return feature.get("type") in ("float", "int")


def _key(values: np.ndarray) -> np.ndarray:
    """Map doubles to unsigned integers in the same order, so bisection steps through every double."""
    bits = np.asarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _value(keys: np.ndarray) -> np.ndarray:
    bits = np.where(keys & _SIGN, keys & ~_SIGN, ~keys)
    return bits.astype(np.uint64).view(np.float64)
