"""``python -m bench.parity``: how far ONNX Runtime answers from scikit-learn, per model family.

Packages one model of each family we serve (the demo and bench models, then linear pipelines
with imputers, scalers and one-hot encoders, single trees, forests, gradient boosting of both
kinds, and SVR, which skl2onnx converts to float only) into a scratch folder and prints what
packaging measured on the hold-out and on the probes: the backend that serves by default, the
graph, the largest deviation on any output and the rows it was measured on. The same families
are the parity test's (``tests/models/test_parity_families.py``).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from bench import models as bench_models
from service.models import demo, onnx_export
from service.models.packaging import package_model

SEED = 7
Family = Callable[[], tuple[Any, pd.DataFrame, pd.Series]]


def shop(n: int = 800) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Mixed features (an int, floats with gaps, two categories); a 3-class and a numeric target."""
    rng = np.random.default_rng(SEED)
    X = pd.DataFrame({"age": rng.integers(18, 80, n).astype("int64"), "income": rng.normal(50, 15, n),
                      "debt": rng.lognormal(2, 1, n), "city": rng.choice(["paris", "lyon", "nice"], n),
                      "plan": rng.choice(["basic", "pro"], n)})
    X.loc[X.index % 9 == 0, "income"] = np.nan
    score = ((X["income"].fillna(50) - 50) / 15 + (X["city"] == "nice") - (X["plan"] == "basic")
             - X["debt"] / 20 + rng.normal(0, 0.5, n))
    classes = pd.Series(np.select([score < -0.5, score < 0.7], ["leave", "stay"], "upgrade"))
    return X, classes, score * 10 + 100


def _preprocess() -> ColumnTransformer:
    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    return ColumnTransformer([("num", numbers, ["age", "income", "debt"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"])])


def _numbers() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    X, classes, value = shop()
    return X[["age", "income", "debt"]], classes, value


def _diabetes() -> tuple[pd.DataFrame, pd.Series]:
    spec = demo.diabetes()
    return spec["X"], spec["y"]


def _demo(make: Callable[[], dict[str, Any]]) -> Family:
    def family() -> tuple[Any, pd.DataFrame, pd.Series]:
        spec = make()
        return spec["estimator"], spec["X"], spec["y"]
    return family


def _bench(name: str) -> Family:
    def family() -> tuple[Any, pd.DataFrame, pd.Series]:
        X, y = bench_models.synthetic_data()
        return bench_models.estimators()[name], X, y
    return family


#: name -> (estimator, X, y); every one but "svr" is expected to serve through ONNX by default.
FAMILIES: dict[str, Family] = {
    "breast-cancer": _demo(demo.breast_cancer),
    "diabetes": _demo(demo.diabetes),
    "bench-random-forest": _bench(bench_models.FOREST),
    "bench-hist-gb": _bench(bench_models.BOOSTED),
    "lr-onehot-imputer": lambda: (make_pipeline(_preprocess(), LogisticRegression(max_iter=2000)), *shop()[:2]),
    "decision-tree-classifier": lambda: (DecisionTreeClassifier(random_state=SEED), *_numbers()[:2]),
    "decision-tree-regressor": lambda: (DecisionTreeRegressor(random_state=SEED), _numbers()[0], _numbers()[2]),
    "random-forest-regressor": lambda: (RandomForestRegressor(50, random_state=SEED), _numbers()[0], _numbers()[2]),
    # the case: 1.2e-4 off through the float graph on its hold-out and threshold rows
    "random-forest-diabetes": lambda: (RandomForestRegressor(50, random_state=0), _diabetes()[0], _diabetes()[1]),
    "random-forest-pipeline": lambda: (make_pipeline(_preprocess(), RandomForestClassifier(30, random_state=SEED)),
                                       *shop()[:2]),
    "hist-gb-pipeline": lambda: (make_pipeline(_preprocess(), HistGradientBoostingClassifier(random_state=SEED)),
                                 *shop()[:2]),
    "hist-gb-regressor": lambda: (HistGradientBoostingRegressor(random_state=SEED), _numbers()[0], _numbers()[2]),
    "gradient-boosting-classifier": lambda: (make_pipeline(SimpleImputer(), GradientBoostingClassifier(
        n_estimators=50, random_state=SEED)), *_numbers()[:2]),
    "gradient-boosting-regressor": lambda: (make_pipeline(SimpleImputer(), GradientBoostingRegressor(
        random_state=SEED)), _numbers()[0], _numbers()[2]),
    "svr": lambda: (make_pipeline(SimpleImputer(), StandardScaler(), SVR()), _numbers()[0], _numbers()[2]),
}
#: Families expected to miss 1e-9 and serve with joblib (skl2onnx's SVMRegressor is float only).
JOBLIB = frozenset({"svr"})


def package(name: str, root: Path) -> tuple[dict[str, Any], Any, pd.DataFrame]:
    """Fit family ``name`` on 75% of its rows and package it into ``root``; return manifest, model, hold-out."""
    model, X, y = FAMILIES[name]()
    X_train, X_test, y_train, _y_test = train_test_split(X, y, test_size=0.25, random_state=SEED)
    model.fit(X_train, y_train)
    return package_model(model, name, root, X_test, _y_test, reference=X_train), model, X_test


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        print(f"{'family':30} {'backend':8} {'graph':24} {'largest deviation':>18}  rows")
        for name in FAMILIES:
            manifest, _model, _X = package(name, Path(scratch))
            report = manifest["backends"]["onnx"]
            rows = (report.get("parity") or {}).get("rows", {})
            backend = "onnx" if report["status"] == onnx_export.OK else "joblib"
            graph = f"{report.get('input_dtype')} {report.get('graph')}"
            deviation = report.get("max_abs_diff")
            print(f"{name:30} {backend:8} {graph:24} {deviation if deviation is not None else '-':>18}  "
                  + ", ".join(f"{kind} {n}" for kind, n in rows.items()))
            if report.get("reason"):
                print(f"{'':30} {report['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
