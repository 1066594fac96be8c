"""Explain cost per row next to predict, in-process: ``python -m tests.explain.measure_cost``.

The demo classifier (StandardScaler + LogisticRegression, 30 features), a 100-tree
RandomForest and a k-neighbours model (the sampled fallback), each for one row and for a batch;
median of repeats, milliseconds per row. Not a test: numbers for the README and ``make bench``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service import explain
from service.models.demo import train_demo
from service.serving import runtime
from tests.explain.helpers import loaded

BATCH = 100


def per_row(call: Callable[[], object], rows: int, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / rows * 1e3


def main() -> None:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    with tempfile.TemporaryDirectory() as folder:
        train_demo(Path(folder))
        demo = runtime.load(Path(folder) / "breast-cancer" / "1", name="breast-cancer", version=1, backend="joblib")
    models = {"demo breast-cancer (LogisticRegression)": demo,
              "RandomForest, 100 trees": loaded(RandomForestClassifier(100, random_state=0, n_jobs=1), X, y),
              "KNeighbors (sampled fallback)": loaded(make_pipeline(StandardScaler(), KNeighborsClassifier()), X, y)}
    for label, model in models.items():
        method = explain.method_for(model)  # chosen and checked once per version, outside the timing
        for n in (1, min(BATCH, method.max_rows or BATCH)):
            columns = {f["name"]: X[f["name"]].to_numpy(np.float64)[:n] for f in model.features}
            predict = per_row(lambda c=columns, m=model: m.predict(c), n)
            explained = per_row(lambda c=columns, m=model: explain.explain(m, c), n, repeat=3 if method.max_rows else 7)
            print(f"{label:40s} rows {n:>3}: predict {predict:8.3f} ms/row   explain {explained:8.3f} ms/row"
                  f"   ({method.name})")


if __name__ == "__main__":
    main()
