"""The packaging metrics computed fast from outputs already made, for the bootstrap's resamples.

A thousand resamples through scikit-learn's metric functions cost seconds in input checks alone;
binary classification and regression are a few numpy sums here (ROC AUC by ranks, the
Mann-Whitney form, ties averaged as scikit-learn does). Multiclass falls back to scikit-learn.
Point figures in a report still come from ``service.models.evaluation.evaluate``. Pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

EPS = np.finfo(np.float64).eps


def score(truth: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None, task: str,
          classes: list[Any] | None) -> dict[str, float]:
    """``evaluate``'s metrics for one set of rows, from predictions (and probabilities) already computed."""
    if task == "regression":
        return _regression(truth.astype(float), predicted.astype(float))
    classes = list(classes or [])
    if len(classes) != 2:
        return _multiclass(truth, predicted, proba, classes)
    positive = truth == classes[1]
    said = predicted == classes[1]
    tp, fp = int(np.sum(positive & said)), int(np.sum(~positive & said))
    fn, tn = int(np.sum(positive & ~said)), int(np.sum(~positive & ~said))
    recalls = [r for r in (_ratio(tp, tp + fn, None), _ratio(tn, tn + fp, None)) if r is not None]
    result = {"accuracy": (tp + tn) / len(truth), "balanced_accuracy": float(np.mean(recalls)),
              "precision": _ratio(tp, tp + fp, 0.0), "recall": _ratio(tp, tp + fn, 0.0),
              "f1": _ratio(2 * tp, 2 * tp + fp + fn, 0.0)}
    if proba is not None and 0 < positive.sum() < len(truth):
        ranks = rankdata(proba[:, 1])
        n_pos = int(positive.sum())
        n_neg = len(truth) - n_pos
        result["roc_auc"] = float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        chosen = np.clip(np.where(positive, proba[:, 1], proba[:, 0]), EPS, 1 - EPS)
        result["log_loss"] = float(-np.mean(np.log(chosen)))
    return result


def _regression(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    error = truth - predicted
    result = {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    spread = float(np.sum((truth - truth.mean()) ** 2))
    if spread > 0:
        result["r2"] = 1.0 - float(np.sum(error**2)) / spread
    return result


def _multiclass(truth: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None,
                classes: list[Any]) -> dict[str, float]:
    args = {"average": "macro", "zero_division": 0}
    result = {"accuracy": float(np.mean(truth == predicted)),
              "balanced_accuracy": float(skm.balanced_accuracy_score(truth, predicted)),
              "precision": float(skm.precision_score(truth, predicted, **args)),
              "recall": float(skm.recall_score(truth, predicted, **args)),
              "f1": float(skm.f1_score(truth, predicted, **args))}
    if proba is not None and len(set(truth.tolist())) == len(classes):
        result["roc_auc"] = float(skm.roc_auc_score(truth, proba, multi_class="ovr", labels=classes))
        result["log_loss"] = float(skm.log_loss(truth, proba, labels=classes))
    return result


def _ratio(top: int, bottom: int, empty: float | None) -> float | None:
    return top / bottom if bottom else empty
