"""Cross-validation for any estimator: refit clones K times on training data, keep mean and std.

The fold metrics are the hold-out metrics (``evaluation.evaluate``), so a gate can name either
(``accuracy`` or ``cv.accuracy``). Fits clones only: the model being packaged is never refitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

from service.models.evaluation import evaluate

SEED = 0


def cross_validate(model: Any, X: pd.DataFrame, y: pd.Series, folds: int, task: str) -> dict[str, Any]:
    """Fit ``folds`` clones of ``model`` on ``X, y`` and return each metric's mean and std."""
    if folds < 2:
        raise ValueError(f"--cv must be at least 2, got {folds}")
    if folds > len(X):
        raise ValueError(f"--cv {folds} needs at least {folds} rows in --train, it has {len(X)}")
    splitter = (StratifiedKFold if task == "classification" else KFold)(folds, shuffle=True, random_state=SEED)
    scores: dict[str, list[float]] = {}
    for train, test in splitter.split(X, y):
        fitted = clone(model).fit(X.iloc[train], y.iloc[train])
        for metric, value in evaluate(fitted, X.iloc[test], y.iloc[test], task).items():
            scores.setdefault(metric, []).append(value)
    result: dict[str, Any] = {"folds": folds, "seed": SEED, "rows": len(X)}
    for metric, values in scores.items():
        if len(values) == folds:  # a metric some folds could not compute (a class absent) is left out
            result[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return result


def gate_values(holdout: dict[str, float], cv: dict[str, Any] | None) -> dict[str, float]:
    """The figures a quality gate may name: hold-out metrics as they are, cross-validated ones as ``cv.<m>``."""
    measured = dict(holdout)
    for metric, value in (cv or {}).items():
        if isinstance(value, dict) and "mean" in value:
            measured[f"cv.{metric}"] = float(value["mean"])
    return measured
