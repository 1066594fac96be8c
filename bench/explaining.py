"""What an explanation costs per row next to a prediction, in process, one thread.

For each model, ``explain.explain`` (the method chosen and checked once per version, outside
the timing, as the server caches it) and ``LoadedModel.predict`` (the served backend) run on
the same validated columns, for one row and a batch (the sampled method's row limit caps it).
``python -m bench`` times the demo classifier and its 100-tree RandomForest; run alone
(``python -m bench.explaining``) it also packages a k-neighbours model, the sampled fallback,
which is too slow for every bench run. Nothing here starts a server.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bench.inprocess import BUDGET_SECONDS, time_call
from service import explain
from service.serving import runtime

BATCH = 100


@dataclass(frozen=True)
class ExplainCost:
    """Median milliseconds per row for predict and explain on one batch."""

    model: str
    rows: int
    method: str
    predict_ms_per_row: float
    explain_ms_per_row: float

    @property
    def ratio(self) -> float:
        return self.explain_ms_per_row / self.predict_ms_per_row if self.predict_ms_per_row else float("nan")


def columns_of(model: runtime.LoadedModel, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Columns as validation hands them over: float64 for numbers, objects for the rest."""
    return {f["name"]: frame[f["name"]].to_numpy(np.float64 if f["type"] in ("float", "int") else object)
            for f in model.features}


def measure(name: str, model: runtime.LoadedModel, frame: pd.DataFrame, budget: float) -> list[ExplainCost]:
    """Predict and explain one row and a batch of ``frame``'s rows."""
    method = explain.method_for(model)
    costs = []
    for n in sorted({1, min(BATCH, method.max_rows or BATCH, len(frame))}):
        columns = columns_of(model, frame.head(n))
        predict = time_call(lambda c=columns: model.predict(c), budget)
        explained = time_call(lambda c=columns: explain.explain(model, c), budget)
        costs.append(ExplainCost(name, n, method.name, predict.median_ms / n, explained.median_ms / n))
    return costs


def measure_all(root: Path, frames: dict[str, pd.DataFrame], budget: float = BUDGET_SECONDS) -> list[dict[str, Any]]:
    """Every model's costs (version 1 in ``root``), as dicts for the results file."""
    with threadpool_limits(limits=1):
        return [asdict(cost) | {"ratio": cost.ratio}
                for name, frame in frames.items()
                for cost in measure(name, runtime.load(root / name / "1", name=name, version=1), frame, budget)]


def main() -> None:
    """Package the demo models, a forest and a k-neighbours model in a temp folder and print their costs."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bench import models
    from service.models.packaging import package_model

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        models.train_all(root)
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(X, y)
        package_model(knn, "k-neighbours", root, X, y, description="sampled fallback", changelog="bench", reference=X)
        features, _ = models.synthetic_data()
        frames = {"breast-cancer": X, models.FOREST: features, "k-neighbours": X}
        for cost in measure_all(root, frames):
            print(f"{cost['model']:16s} rows {cost['rows']:>3}: predict {cost['predict_ms_per_row'] * 1000:9.1f} us/row   "
                  f"explain {cost['explain_ms_per_row'] * 1000:9.1f} us/row   ({cost['method']})")


if __name__ == "__main__":
    main()
