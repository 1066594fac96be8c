"""Estimators that misbehave on purpose; importable by the server under test (tests.faulty_models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

TRIGGER = 999.0


class RaisingRegressor(RegressorMixin, BaseEstimator):
    """Predicts the row sum, but raises when any value equals ``TRIGGER``: a model that breaks."""

    def fit(self, X, y):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        values = np.asarray(X, dtype=float)
        if (values == TRIGGER).any():
            raise ArithmeticError("model failure on purpose")
        return values.sum(axis=1)


class MarkerOnUnpickle:
    """Unpickling this creates ``marker``: proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path, padding: str = "A" * 4096):
        self.marker = Path(marker)
        self.padding = padding

    def __reduce__(self):
        return (touch_marker, (str(self.marker), self.padding))


def touch_marker(marker: str, padding: str) -> str:
    """What unpickling a ``MarkerOnUnpickle`` runs; returns something that is not a model."""
    Path(marker).touch()
    return padding


class SumRegressor(RegressorMixin, BaseEstimator):
    """Predicts the row sum and never fails: the dependable version others fall back to."""

    def fit(self, X, y):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        return np.asarray(X, dtype=float).sum(axis=1)


class SlowRegressor(SumRegressor):
    """Like ``SumRegressor`` but takes ``delay`` seconds per call: a version that overruns its budget."""

    def __init__(self, delay: float = 0.5):
        self.delay = delay

    def predict(self, X):
        import time

        time.sleep(self.delay)
        return super().predict(X)


NAN_TRIGGER, INF_TRIGGER, NEG_INF_TRIGGER = 777.0, 888.0, -888.0


def _poisoned(X, values):
    """``values`` (one entry or one row per input row) with NaN, +inf or -inf where the first feature is a trigger."""
    first = np.asarray(X, dtype=float)[:, 0]
    values = np.array(values, dtype=float)
    values[first == NAN_TRIGGER] = np.nan
    values[first == INF_TRIGGER] = np.inf
    values[first == NEG_INF_TRIGGER] = -np.inf
    return values


class NonFiniteRegressor(SumRegressor):
    """Predicts the row sum, but NaN or infinity for rows whose first feature is a trigger: output JSON cannot carry."""

    def predict(self, X):
        return _poisoned(X, super().predict(X))


class NonFiniteClassifier(ClassifierMixin, BaseEstimator):
    """Integer labels from the row sum's sign, and NaN (or infinite) probabilities for trigger rows."""

    def fit(self, X, y):
        self.n_features_in_ = np.asarray(X).shape[1]
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return self.classes_[(np.asarray(X, dtype=float).sum(axis=1) > 0).astype(int)]

    def predict_proba(self, X):
        high = 0.5 * (1 + np.tanh(np.asarray(X, dtype=float).sum(axis=1) / 2))  # a logistic that never overflows
        return _poisoned(X, np.column_stack([1 - high, high]))
