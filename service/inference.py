"""The prediction path behind every wire format: resolve -> validate -> predict -> shape.

Codecs (the native v1 view today) hand it a parsed JSON payload and get a plain dict back.
No Flask.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.catalog import Catalog
from service.errors import ValidationFailed
from service.validation import parse_predict_request


@dataclass(frozen=True)
class Limits:
    max_rows: int
    vectorized_min_rows: int


@dataclass(frozen=True)
class Answer:
    """A finished prediction: the response body and the version that computed it."""

    body: dict[str, Any]
    version: int
    rows: int
    seconds: float


def predict(catalog: Catalog, payload: Any, limits: Limits, *, name: str,
            version: int | None = None, label: str | None = None) -> Answer:
    """Answer one predict request for a model, a pinned version or a label."""
    start = time.perf_counter()
    model = catalog.resolve(name, version, label)
    batch = parse_predict_request(payload, model.features, max_rows=limits.max_rows,
                                  vectorized_min_rows=limits.vectorized_min_rows)
    if batch.probabilities and not model.has_probabilities:
        raise ValidationFailed(
            "This model does not provide probabilities.",
            details={"errors": [{"row": None, "field": "parameters.probabilities",
                                 "messages": ["This model does not provide probabilities."]}], "error_count": 1},
        )
    result = model.predict(batch.columns, batch.probabilities)
    body: dict[str, Any] = {
        "predictions": _jsonable(result.predictions),
        "model": name,
        "version": model.version,
        "ids": prediction_ids(batch.n_rows),
    }
    if result.probabilities is not None:
        body["classes"] = result.classes
        body["probabilities"] = result.probabilities
    return Answer(body, model.version, batch.n_rows, time.perf_counter() - start)


def prediction_ids(n: int) -> list[str]:
    """Return ``n`` unique ids: one time-ordered random base per request plus the row index."""
    base = f"{time.time_ns():x}{secrets.token_hex(6)}"
    return [f"{base}-{i}" for i in range(n)]


def _jsonable(values: np.ndarray) -> Any:
    """Numeric arrays go to orjson as they are; object arrays (string classes) become lists."""
    return values.tolist() if values.dtype == object else values
