"""Parity: how far another backend's answers are from the scikit-learn model's, output by output.

The server answers predictions and, for classifiers, probabilities; a backend may serve by
default only if every one of them is within ``TOLERANCE`` (absolute) of what the estimator gives
in process, classes identical, on the hold-out and on the probes (``parity_probes``). ``measure``
says by how much each output differs and on which kind of row; ``verdict`` turns that into the
one line packaging prints. Manifests record the measurement, so a server can tell a version
checked at this tolerance from one packaged before it (``passes``). No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The largest absolute difference from scikit-learn a default backend may show, on any output.
TOLERANCE = 1e-9
HOLDOUT = "holdout"


@dataclass(frozen=True)
class Answers:
    """One backend's outputs for the same rows: predictions and, for classifiers, probabilities."""

    predictions: np.ndarray
    probabilities: np.ndarray | None = None


def measure(expected: Answers, got: Answers, kinds: np.ndarray, classification: bool) -> dict[str, Any]:
    """Compare ``got`` with scikit-learn's ``expected``; return the manifest's ``parity`` section."""
    kinds = np.asarray(kinds, dtype=object)
    outputs: dict[str, Any] = {}
    if classification:
        differ = np.asarray(got.predictions).reshape(-1) != np.asarray(expected.predictions).reshape(-1)
        outputs["predictions"] = {"differ": int(differ.sum()), "max_abs_diff": 0.0 if not differ.any() else None,
                                  "where": _where(kinds, differ)}
    else:
        outputs["predictions"] = _numbers(expected.predictions, got.predictions, kinds)
    if expected.probabilities is not None:
        outputs["probabilities"] = _numbers(expected.probabilities, got.probabilities, kinds)
    found = [o["max_abs_diff"] for o in outputs.values()]
    largest = None if any(d is None for d in found) else max(found, default=0.0)
    rows = {str(kind): int(n) for kind, n in zip(*np.unique(kinds.astype(str), return_counts=True), strict=True)}
    return {"tolerance": TOLERANCE, "max_abs_diff": largest, "outputs": outputs, "rows": rows}


def verdict(parity: dict[str, Any]) -> str | None:
    """One line saying which output misses the tolerance, by how much and where; None when none does."""
    tolerance = parity.get("tolerance", TOLERANCE)
    for name, output in parity["outputs"].items():
        if output.get("differ"):
            return (f"{name}: the class differs from scikit-learn's on {output['differ']} rows "
                    f"({output['where']} rows)")
        if output.get("non_finite"):
            return (f"{name}: {output['non_finite']} values are not finite where scikit-learn's are, or the "
                    f"reverse ({output['where']} rows)")
        if output["max_abs_diff"] > tolerance:
            return (f"{name} differ from scikit-learn by up to {output['max_abs_diff']:.3g} "
                    f"({output['where']} rows; tolerance {tolerance:g})")
    return None


def passes(report: dict[str, Any] | None) -> bool:
    """Whether a manifest's backend report records parity within today's tolerance.

    A version packaged before parity was measured this way records no ``parity`` section (or a
    looser tolerance): it does not pass, so joblib serves it until it is packaged again.
    """
    parity = (report or {}).get("parity")
    if not isinstance(parity, dict):
        return False
    tolerance, largest = parity.get("tolerance"), parity.get("max_abs_diff")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (tolerance, largest))
    return numbers and tolerance <= TOLERANCE and largest <= tolerance


def _numbers(expected: Any, got: Any, kinds: np.ndarray) -> dict[str, Any]:
    a = np.asarray(expected, dtype=np.float64)
    b = np.asarray(got, dtype=np.float64).reshape(a.shape)
    same_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        diff = np.where(same_nan | (a == b), 0.0, np.abs(a - b))  # equal infinities differ by nothing
    bad = ~np.isfinite(diff)
    per_row = diff.reshape(len(diff), -1).max(axis=1) if diff.size else np.zeros(0)
    if bad.any():
        rows = bad.reshape(len(bad), -1).any(axis=1)
        return {"max_abs_diff": None, "non_finite": int(rows.sum()), "where": _where(kinds, rows)}
    if not per_row.size:
        return {"max_abs_diff": 0.0, "where": None}
    worst = int(np.argmax(per_row))
    return {"max_abs_diff": float(per_row[worst]), "where": str(kinds[worst]) if per_row[worst] > 0 else None}


def _where(kinds: np.ndarray, rows: np.ndarray) -> str | None:
    """The kinds of rows flagged, hold-out first: where a reader should look."""
    found = sorted({str(k) for k in kinds[np.asarray(rows, dtype=bool)]}, key=lambda k: (k != HOLDOUT, k))
    return ", ".join(found) or None
