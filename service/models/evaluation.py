"""Hold-out metrics: how packaging, cross-validation and live performance measure a model.

Classification: accuracy, balanced accuracy, precision, recall, F1 (binary: the second class is
positive; multiclass: macro), ROC AUC and log loss when probabilities exist; regression: RMSE,
MAE, R². ``averaging`` says which of those choices a manifest's figures were made with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def averaging(classes: list[Any] | None) -> dict[str, Any]:
    """How precision, recall and F1 are computed for these classes."""
    if classes is None:
        return {}
    if len(classes) == 2:
        return {"average": "binary", "pos_label": classes[1],
                "note": f"precision/recall/f1 treat {classes[1]!r} (the second of model.classes_) as positive"}
    return {"average": "macro", "pos_label": None, "note": "precision/recall/f1 are unweighted means over classes"}


def evaluate(model: Any, X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    """Measure the model on hold-out data with the metrics its task calls for."""
    X = model_input(model, X)
    predicted = model.predict(X)
    if task == "regression":
        return {"rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
                "mae": float(skm.mean_absolute_error(y, predicted)), "r2": float(skm.r2_score(y, predicted))}
    classes = list(model.classes_)
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    extra = {"pos_label": classes[1]} if binary else {}
    result = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)),
        "precision": float(skm.precision_score(y, predicted, average=average, zero_division=0, **extra)),
        "recall": float(skm.recall_score(y, predicted, average=average, zero_division=0, **extra)),
        "f1": float(skm.f1_score(y, predicted, average=average, zero_division=0, **extra)),
    }
    if hasattr(model, "predict_proba") and len(set(y)) == len(classes):
        proba = model.predict_proba(X)
        result["roc_auc"] = float(skm.roc_auc_score(y, proba[:, 1]) if binary else
                                  skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        result["log_loss"] = float(skm.log_loss(y, proba, labels=classes))
    return result


def model_input(model: Any, X: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    """Give the model its data the way it was fitted: named columns, or a bare array."""
    # a model fitted on an array warns (an error under our test settings) when given names
    return X if hasattr(model, "feature_names_in_") else X.to_numpy()
