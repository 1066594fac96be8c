"""Small fitted models wrapped as loaded versions, with a manifest built the way packaging builds it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes

from service.models.evaluation import model_input
from service.models.packaging import infer_features, task_of
from service.models.profile import profile_frame
from service.serving.runtime import LoadedModel


def loaded(estimator: Any, X: pd.DataFrame, y: Any, name: str = "m", overrides: dict | None = None) -> LoadedModel:
    """Fit ``estimator`` on (X, y) and wrap it with a manifest as packaging writes it."""
    estimator.fit(X, y)
    task = task_of(estimator)
    features = infer_features(estimator, X, overrides)
    classes = [c.item() if hasattr(c, "item") else c for c in estimator.classes_] if task == "classification" else None
    manifest = {"name": name, "version": 1, "task": task,
                "input": {"features": features, "feature_names_in": hasattr(estimator, "feature_names_in_")},
                "output": {"classes": classes, "probabilities": hasattr(estimator, "predict_proba")},
                "reference_profile": {"rows": len(X), "features": profile_frame(X, features)}}
    return LoadedModel(name, 1, manifest, estimator, 0.0)


def columns_of(model: LoadedModel, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Input columns as validation hands them over: float64 for numbers, objects for the rest."""
    out = {}
    for f in model.features:
        values = X[f["name"]]
        out[f["name"]] = values.to_numpy(dtype=np.float64) if f["type"] in ("float", "int") else values.to_numpy(object)
    return out


def cancer(n: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:n, :8]
    X.columns = [c.replace(" ", "_") for c in X.columns]
    return X, y.iloc[:n]


def three_classes(n: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    X, _ = cancer(n)
    y = pd.Series(np.digitize(X["mean_radius"], [12.5, 15.5]), name="size").map({0: "s", 1: "m", 2: "l"})
    return X, y


def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X.iloc[:300], y.iloc[:300]


def mixed(n: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers with gaps and a text category: what a ColumnTransformer pipeline is for."""
    rng = np.random.default_rng(3)
    age = rng.normal(45, 12, n)
    age[rng.random(n) < 0.1] = np.nan
    income = rng.lognormal(8, 0.5, n)
    city = rng.choice(["north", "south", "east"], n)
    logit = 0.05 * np.nan_to_num(age - 45) + 0.001 * (income - 3000) + (city == "north") * 1.0
    y = (logit + rng.normal(0, 1, n) > 0).astype(int)
    return pd.DataFrame({"age": age, "income": income, "city": city}), pd.Series(y, name="y")


def output(model: LoadedModel, kind: str, X: Any) -> np.ndarray:
    """The model output an explanation of ``kind`` adds up to, as (n, k)."""
    data = model_input(model.estimator, X)
    if kind == "log_odds":
        values = model.estimator.decision_function(data)
    elif kind == "probability":
        values = model.estimator.predict_proba(data)
        values = values[:, 1:] if values.shape[1] == 2 else values
    else:
        values = model.estimator.predict(data)
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)
