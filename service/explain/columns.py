"""Which original feature each column of a fitted preprocessing chain comes from.

A contribution computed on a transformed column (a one-hot indicator, a scaled value) belongs
to the one input feature it was made from; summing the columns of each feature gives that
feature's contribution. That is exact only when every output column depends on a single input
column, so only transformers known to work column by column are followed; anything else raises
``Unsupported`` and the caller falls back to a model-agnostic method. No Flask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

#: Transformers whose output column i is a function of input column i alone.
ONE_TO_ONE = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, OrdinalEncoder, QuantileTransformer,
              PowerTransformer)


class Unsupported(Exception):
    """A model this method cannot explain exactly; the message says which part."""


def split(estimator: Any) -> tuple[list[Any], Any]:
    """Return the fitted preprocessing steps and the final estimator of a model or Pipeline."""
    if isinstance(estimator, Pipeline):
        steps = [step for _, step in estimator.steps[:-1] if step not in (None, "passthrough")]
        inner, final = split(estimator.steps[-1][1])
        return steps + inner, final
    return [], estimator


def transform(steps: list[Any], X: Any) -> np.ndarray:
    """Run ``X`` through the fitted steps and return a dense float array."""
    for step in steps:
        X = step.transform(X)
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def origins(steps: list[Any], n_features: int) -> np.ndarray:
    """Return, for each column the steps output, the index of the input feature it comes from."""
    groups = list(range(n_features))
    for step in steps:
        groups = _through(step, groups)
    return np.asarray(groups, dtype=np.int64)


def grouping(origin: np.ndarray, n_features: int) -> np.ndarray:
    """A 0/1 matrix (columns x features) that sums column contributions into feature contributions."""
    matrix = np.zeros((len(origin), n_features))
    matrix[np.arange(len(origin)), origin] = 1.0
    return matrix


def _through(step: Any, groups: list[int]) -> list[int]:
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return groups
    if isinstance(step, Pipeline):
        for _, inner in step.steps:
            groups = _through(inner, groups)
        return groups
    if isinstance(step, ColumnTransformer):
        return _column_transformer(step, groups)
    if isinstance(step, OneHotEncoder):
        return [groups[i] for i, width in enumerate(_one_hot_widths(step)) for _ in range(width)]
    if isinstance(step, SimpleImputer):
        return _imputer(step, groups)
    if isinstance(step, ONE_TO_ONE):
        return groups
    raise Unsupported(f"{type(step).__name__} may mix input columns")


def _column_transformer(step: ColumnTransformer, groups: list[int]) -> list[int]:
    out: list[int] = []
    names = list(getattr(step, "feature_names_in_", []))
    for _, transformer, columns in step.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        picked = _indices(columns, names, len(groups))
        if picked:
            out += _through(transformer, [groups[i] for i in picked])
    return out


def _indices(columns: Any, names: list[str], n: int) -> list[int]:
    """Resolve a fitted ColumnTransformer column selection to input positions."""
    if isinstance(columns, slice):
        return list(range(n))[columns]
    items = [columns] if isinstance(columns, (str, int, np.integer)) else list(columns)
    if items and all(isinstance(c, (bool, np.bool_)) for c in items):
        return [i for i, keep in enumerate(items) if keep]
    return [names.index(c) if isinstance(c, str) else int(c) for c in items]


def _one_hot_widths(step: OneHotEncoder) -> list[int]:
    widths = []
    for i, categories in enumerate(step.categories_):
        width = len(categories)
        infrequent = getattr(step, "infrequent_categories_", None)
        if infrequent is not None and infrequent[i] is not None:
            width -= len(infrequent[i]) - 1
        if step.drop_idx_ is not None and step.drop_idx_[i] is not None:
            width -= 1
        widths.append(width)
    return widths


def _imputer(step: SimpleImputer, groups: list[int]) -> list[int]:
    # an output is an input kept (empty ones may be dropped) or "missingindicator_<input>"
    names = getattr(step, "feature_names_in_", None)
    names = [str(n) for n in names] if names is not None else [f"x{i}" for i in range(len(groups))]
    position = {name: i for i, name in enumerate(names)}
    out = []
    for name in map(str, step.get_feature_names_out()):
        out.append(groups[position[name] if name in position else position[name.removeprefix("missingindicator_")]])
    return out
