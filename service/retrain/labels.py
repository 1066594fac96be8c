"""Ground truth as the model's own values: feedback JSON and CSV text mapped onto its classes.

``1``, ``1.0`` and ``"1"`` all find class ``1`` (``service.monitoring.performance.coerce_labels``),
so labels from a CSV and from the feedback API agree. Pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.monitoring.performance import MISSING, UNKNOWN, coerce_labels, coerce_numbers


def as_target(values: np.ndarray, task: str, classes: list[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Return the values as the model's classes (or floats) and a mask of the rows that have one."""
    if task == "regression":
        numbers = coerce_numbers(values)
        return numbers, np.isfinite(numbers)
    index = coerce_labels(values, list(classes or []))
    usable = (index != MISSING) & (index != UNKNOWN)
    out = np.empty(len(index), dtype=object)
    out[usable] = [classes[i] for i in index[usable]]  # type: ignore[index]
    return out, usable


def plain(values: np.ndarray) -> np.ndarray:
    """Object labels as one numpy dtype when they share one: integer classes stay integers."""
    if values.dtype == object and len(values):
        try:
            return np.array(values.tolist())
        except (TypeError, ValueError):
            return values
    return values
