"""Cross-validation for any estimator: refit clones K times on training data, keep mean and std.

The fold metrics are the hold-out metrics (``packaging.evaluate``), so a gate can name either
(``accuracy`` or ``cv.accuracy``). Also says how the classification metrics average and which
class is positive. Fits clones only: the model being packaged is never refitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

SEED = 0


def averaging(classes: list[Any] | None) -> dict[str, Any]:
    """How precision, recall and F1 are computed for these classes."""
    if classes is None:
        return {}
    if len(classes) == 2:
        return {"average": "binary", "pos_label": classes[1],
                "note": f"precision/recall/f1 treat {classes[1]!r} (the second of model.classes_) as positive"}
    return {"average": "macro", "pos_label": None, "note": "precision/recall/f1 are unweighted means over classes"}


def cross_validate(model: Any, X: pd.DataFrame, y: pd.Series, folds: int, task: str) -> dict[str, Any]:
    """Fit ``folds`` clones of ``model`` on ``X, y`` and return each metric's mean and std."""
    from service.models.packaging import evaluate

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
