"""Reference profile: what the data a model was validated on looked like.

Packaging stores it in the manifest so drift and data-quality checks later compare live
traffic with it.

A feature flagged ``pii`` keeps nothing that can single out a person (``protected_numeric``,
``protected_categorical``): counts and the missing rate; numeric bins as shares over edges
rounded to two significant figures, the outer ones rounded outwards, with every bin holding at
least ``MIN_GROUP`` rows (a sparse bin joins its neighbour), so an edge bounds a group and is
not somebody's value. The outer bins are open as for any feature, and their edges are the
``MIN_GROUP``-th value from each end rounded outwards, so not even an outlier's value shows
through them. No min, max, mean, deviation, quantiles or raw sample. Category shares are
keyed by a salted hash (``service.models.pii``), and categories seen fewer than ``MIN_GROUP``
times count only in ``other_rate``. Pure pandas/numpy; no Flask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from service.models import pii

NUMERIC_BINS = 10
MAX_CATEGORIES = 50
SAMPLE_SIZE = 1000  # raw values kept per numeric feature for two-sample tests (KS)
SAMPLE_SEED = 0
#: Fewest rows a pii bin or category may describe (k-anonymity's k); sparser ones are merged.
MIN_GROUP = 5
SIGNIFICANT = 2  # digits kept on a pii bin edge


def profile_frame(frame: pd.DataFrame, features: list[dict[str, Any]], salt: str | None = None) -> dict[str, Any]:
    """Describe every feature: quantile bins and frequencies, or category frequencies.

    ``salt`` keys the categories of pii features (a fresh one when not given).
    """
    salt = salt or pii.new_salt()
    return {f["name"]: profile_column(frame[f["name"]], f["type"], salt=salt if f.get("pii") else None)
            for f in features}


def profile_column(column: pd.Series, kind: str, *, salt: str | None = None) -> dict[str, Any]:
    """Describe one column; with ``salt`` it is personal data and keeps only what ``protected_*`` allow."""
    n = len(column)
    missing = int(column.isna().sum())
    present = column.dropna()
    base: dict[str, Any] = {"count": n, "missing_rate": missing / n if n else 0.0}
    if salt is not None and len(present):
        base["pii"] = True
        if kind in ("float", "int"):
            base.update(protected_numeric(present.to_numpy(dtype=float)))
        else:
            base.update(protected_categorical(present.astype(str if kind == "string" else object), salt))
    elif kind in ("float", "int") and len(present):
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


def protected_numeric(values: np.ndarray) -> dict[str, Any]:
    """Shares over rounded edges, each bin at least ``MIN_GROUP`` rows; nothing else of the values."""
    if len(values) < MIN_GROUP:
        return {"kind": "numeric", "bin_edges": [], "frequencies": [1.0]}
    quantiles = np.quantile(values, np.linspace(0, 1, NUMERIC_BINS + 1))
    inner = {_round_sig(q, np.round) for q in quantiles[1:-1]}
    # outer bins are open (drift counts beyond them), so their edges need not reach the extremes:
    # the MIN_GROUP-th value from each end, rounded outwards, says nothing of one outlier
    ordered = np.sort(values)
    low, high = _round_sig(ordered[MIN_GROUP - 1], np.floor), _round_sig(ordered[-MIN_GROUP], np.ceil)
    edges = sorted({low, high, *(e for e in inner if low < e < high)})
    counts = _bin_counts(values, np.asarray(edges))
    # merge a sparse bin into the next one (the last into the one before) by dropping the edge between
    i = 0
    while len(counts) > 1 and i < len(counts):
        if counts[i] >= MIN_GROUP:
            i += 1
            continue
        j = i if i < len(counts) - 1 else i - 1
        counts[j:j + 2] = [counts[j] + counts[j + 1]]
        del edges[j + 1]
        i = max(j, 0)
    return {"kind": "numeric", "bin_edges": [float(e) for e in edges],
            "frequencies": [c / len(values) for c in counts]}


def protected_categorical(present: pd.Series, salt: str) -> dict[str, Any]:
    """Category shares keyed by salted hash; categories rarer than ``MIN_GROUP`` count as other."""
    counts = present.value_counts()
    kept = counts[counts >= MIN_GROUP].head(MAX_CATEGORIES)
    keyed = {pii.profile_key(salt, k): int(v) / len(present) for k, v in kept.items()}
    return {"kind": "categorical", "hashed": pii.KEY_PREFIX.rstrip(":"), "salt": salt, "categories": keyed,
            "other_rate": float(counts.sum() - kept.sum()) / len(present)}


def _round_sig(value: float, how: Any) -> float:
    """Round to ``SIGNIFICANT`` digits with ``how`` (np.floor, np.ceil or np.round)."""
    if value == 0 or not np.isfinite(value):
        return float(value)
    scale = 10.0 ** (int(np.floor(np.log10(abs(value)))) - SIGNIFICANT + 1)
    return float(round(float(how(value / scale)) * scale, 12))


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
