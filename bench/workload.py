"""What the bench sends: real rows from each model's data set, in the manifest's feature order.

Rows are drawn with replacement with a fixed seed, so every run sends the same bytes and
numbers from two runs are comparable. The same rows are kept as a typed DataFrame for the
in-process comparison, so the server and the estimator see identical data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes

SEED = 1234
BATCH_SIZES = (1, 100, 10_000)
CLASSIFIER, REGRESSOR = "breast-cancer", "diabetes"


@dataclass(frozen=True)
class Scenario:
    """One request shape: a model, a batch size and whether probabilities are asked for."""

    model: str
    rows: int
    probabilities: bool
    body: bytes
    frame: pd.DataFrame
    version: int | None = None  # None: whichever version production serves (the bench's own models have one)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.rows}" + ("/proba" if self.probabilities else "")

    @property
    def label(self) -> str:
        return f"{self.rows:,} row{'s' if self.rows > 1 else ''}" + (" +proba" if self.probabilities else "")

    @property
    def path(self) -> str:
        if self.version is None:
            return f"/v1/models/{self.model}:predict"
        return f"/v1/models/{self.model}/versions/{self.version}:predict"


def demo_data() -> dict[str, pd.DataFrame]:
    """The raw feature tables the demo models were trained on (diabetes age/sex as ints, as in demo.py)."""
    cancer = load_breast_cancer(as_frame=True).data
    diabetes = load_diabetes(as_frame=True, scaled=False).data.astype({"age": "int64", "sex": "int64"})
    return {CLASSIFIER: cancer, REGRESSOR: diabetes}


def manifest_features(root: Path, model: str, version: int = 1) -> list[str]:
    """Feature names in schema order, from the manifest (the order a row-layout request must use)."""
    manifest = json.loads((root / model / str(version) / "manifest.json").read_text())
    return [f["name"] for f in manifest["input"]["features"]]


def sample_rows(data: pd.DataFrame, features: list[str], n: int, seed: int = SEED) -> pd.DataFrame:
    """``n`` rows drawn with replacement (a fixed seed), columns in schema order, dtypes kept."""
    index = np.random.default_rng(seed).integers(0, len(data), size=n)
    return data.iloc[index][features].reset_index(drop=True)


def request_body(frame: pd.DataFrame, probabilities: bool = False) -> bytes:
    """A V1 row-layout body; ``tolist`` gives plain Python ints and floats, so ints stay ints."""
    columns = [frame[name].tolist() for name in frame.columns]
    payload: dict = {"instances": [list(row) for row in zip(*columns, strict=True)]}
    if probabilities:
        payload["parameters"] = {"probabilities": True}
    return orjson.dumps(payload)


def build_scenarios(root: Path, extra: dict[str, pd.DataFrame] | None = None,
                    sizes: tuple[int, ...] = BATCH_SIZES) -> list[Scenario]:
    """One plain-predict scenario per model (the demo models, then ``extra``) and batch size."""
    scenarios = []
    for model, data in (demo_data() | dict(extra or {})).items():
        pool = sample_rows(data, manifest_features(root, model), max(sizes))
        for rows in sizes:
            frame = pool.head(rows)
            scenarios.append(Scenario(model, rows, False, request_body(frame), frame))
    return scenarios
