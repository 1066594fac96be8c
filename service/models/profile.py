"""Reference profile: what the data a model was validated on looked like.

Packaging stores it in the manifest so drift and data-quality checks later compare live
traffic with it. Pure pandas/numpy; no Flask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NUMERIC_BINS = 10
MAX_CATEGORIES = 50
SAMPLE_SIZE = 1000  # raw values kept per numeric feature for two-sample tests (KS)
SAMPLE_SEED = 0


def profile_frame(frame: pd.DataFrame, features: list[dict[str, Any]]) -> dict[str, Any]:
    """Describe every feature: quantile bins and frequencies, or category frequencies."""
    return {f["name"]: profile_column(frame[f["name"]], f["type"]) for f in features}


def profile_column(column: pd.Series, kind: str) -> dict[str, Any]:
    n = len(column)
    missing = int(column.isna().sum())
    present = column.dropna()
    base: dict[str, Any] = {"count": n, "missing_rate": missing / n if n else 0.0}
    if kind in ("float", "int") and len(present):
        values = present.to_numpy(dtype=float)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, NUMERIC_BINS + 1)))
        counts = _bin_counts(values, edges)
        base.update(
            kind="numeric",
            min=float(values.min()),
            max=float(values.max()),
            mean=float(values.mean()),
            std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            quantiles={q: float(np.quantile(values, float(q))) for q in ("0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99")},
            bin_edges=[float(e) for e in edges],
            frequencies=[c / len(values) for c in counts],
            sample=_sample(values),
        )
    elif len(present):
        counts = present.astype(str if kind == "string" else object).value_counts()
        top = counts.head(MAX_CATEGORIES)
        base.update(
            kind="categorical",
            categories={_key(k): int(v) / len(present) for k, v in top.items()},
            other_rate=float(counts.iloc[MAX_CATEGORIES:].sum()) / len(present),
        )
    else:
        base["kind"] = "empty"
    return base


def profile_predictions(predictions: np.ndarray, task: str) -> dict[str, Any]:
    """Describe the model's output on the reference data (class shares or numeric bins)."""
    column = pd.Series(np.asarray(predictions))
    return profile_column(column, "float" if task == "regression" else "category")


def _sample(values: np.ndarray) -> list[float]:
    """Keep a seeded random subset of the raw values, so a later KS test has a reference."""
    if len(values) > SAMPLE_SIZE:
        values = np.random.default_rng(SAMPLE_SEED).choice(values, SAMPLE_SIZE, replace=False)
    return [float(v) for v in values]


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Count values per bin; outer bins are open so live values outside the range still land."""
    if len(edges) < 2:
        return [len(values)]
    inner = edges[1:-1]
    idx = np.searchsorted(inner, values, side="right")
    return np.bincount(idx, minlength=len(edges) - 1).tolist()


def _key(value: Any) -> str:
    """JSON object keys are strings; bools and numbers keep a readable form."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value.item() if hasattr(value, "item") else value)
