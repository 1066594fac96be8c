"""Demo models trained from data sets that ship with scikit-learn, deterministically.

``breast-cancer`` is a classifier and ``diabetes`` a regressor; both run k-fold
cross-validation on the training split, are evaluated on a held-out split and go through the
same packaging and quality gate as any user model. No Flask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.models import artifacts, registry
from service.models.packaging import Threshold, package_model

SEED = 42
FOLDS = 5


def breast_cancer() -> dict[str, Any]:
    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    return {
        "name": "breast-cancer",
        "X": X, "y": y,
        "estimator": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=SEED)),
        "cv": StratifiedKFold(FOLDS, shuffle=True, random_state=SEED),
        "scoring": ("accuracy", "f1", "roc_auc"),
        "stratify": True,
        # measurements of a cell nucleus cannot be negative
        "overrides": {name: {"min": 0.0} for name in X.columns},
        "thresholds": [Threshold("accuracy", "min", 0.9), Threshold("roc_auc", "min", 0.95)],
        "description": "Logistic regression on the Wisconsin breast-cancer data (0 = malignant, 1 = benign).",
    }


def diabetes() -> dict[str, Any]:
    data = load_diabetes(as_frame=True, scaled=False)
    X = data.data.astype({"age": "int64", "sex": "int64"})
    return {
        "name": "diabetes",
        "X": X, "y": data.target,
        "estimator": make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
        "cv": KFold(FOLDS, shuffle=True, random_state=SEED),
        "scoring": {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"},
        "stratify": False,
        "overrides": {"age": {"min": 0, "max": 120}, "sex": {"type": "category", "categories": [1, 2]},
                      "bmi": {"min": 0.0}, "bp": {"min": 0.0}},
        "thresholds": [Threshold("rmse", "max", 65.0), Threshold("r2", "min", 0.3)],
        "description": "Ridge regression of disease progression one year after baseline (diabetes data).",
    }


DEMOS = (breast_cancer, diabetes)


def cross_validation(spec: dict[str, Any], X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """Run k-fold cross-validation and keep mean and std of every score (errors as positives)."""
    scores = cross_validate(spec["estimator"], X, y, cv=spec["cv"], scoring=spec["scoring"])
    result: dict[str, Any] = {"folds": FOLDS, "seed": SEED}
    for key, values in scores.items():
        if key.startswith("test_"):
            metric = key[5:]
            values = np.abs(values) if metric in ("rmse", "mae") else values
            result[metric] = {"mean": float(values.mean()), "std": float(values.std())}
    return result


def train_demo(root: Path, *, force: bool = False, signing_key: str | None = None,
               pmml: bool = False) -> list[dict[str, Any]]:
    """Train and package each demo model that has no version yet (or all, with ``force``); ``pmml`` adds PMML."""
    written = []
    for make in DEMOS:
        spec = make()
        if artifacts.list_versions(root, spec["name"]) and not force:
            continue
        X_train, X_test, y_train, y_test = train_test_split(
            spec["X"], spec["y"], test_size=0.25, random_state=SEED, stratify=spec["y"] if spec["stratify"] else None
        )
        cv = cross_validation(spec, X_train, y_train)
        model = spec["estimator"].fit(X_train, y_train)
        manifest = package_model(
            model, spec["name"], root, X_test, y_test, description=spec["description"],
            changelog="Demo model trained by train-demo.", overrides=spec["overrides"],
            thresholds=spec["thresholds"], cv=cv, signing_key=signing_key,
            training_data={"source": f"sklearn.datasets ({spec['name']})", "rows": len(X_train), "seed": SEED},
            reference=X_train, pmml=pmml,
        )
        registry.record_packaged(root, manifest, actor="cli:train-demo")
        written.append(manifest)
    return written
