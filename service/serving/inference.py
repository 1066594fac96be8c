"""The prediction path behind every wire format: route -> validate -> predict -> shape.

Codecs (the native v1 view today) hand it a parsed JSON payload and get an ``Answer`` back.
When the chosen version raises or overruns the model's time budget, the fallback version
answers instead and the answer says so. No Flask.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import PredictionFailed, ValidationFailed
from service.serving.catalog import Catalog, Route
from service.serving.runtime import LoadedModel, Prediction
from service.serving.validation import Batch, parse_predict_request


@dataclass(frozen=True)
class Limits:
    max_rows: int
    vectorized_min_rows: int


@dataclass(frozen=True)
class Target:
    """What a request asked for: a model, and maybe a pinned version or a label."""

    name: str
    version: int | None = None
    label: str | None = None
    routing_key: str | None = None


@dataclass(frozen=True)
class Answer:
    """A finished prediction: the body, and what observers need to record it."""

    body: dict[str, Any]
    model: LoadedModel  # the version that answered
    role: str  # production | canary | pinned | label | fallback
    batch: Batch
    result: Prediction
    ids: list[str]
    seconds: float
    fallback_from: int | None = None
    fallback_reason: str | None = None
    shadows: tuple[LoadedModel, ...] = field(default=())

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def rows(self) -> int:
        return self.batch.n_rows


class BudgetExceeded(Exception):
    """The chosen version did not answer within the model's time budget."""


def predict(catalog: Catalog, payload: Any, limits: Limits, target: Target, *,
            executor: Executor | None = None, rand: Callable[[], float] = random.random) -> Answer:
    """Answer one predict request for a model, a pinned version or a label."""
    start = time.perf_counter()
    route = catalog.route(target.name, target.version, target.label, target.routing_key, rand)
    batch = _validate(route.model, payload, limits)
    answered_by, role, fallback_from, reason = route.model, route.role, None, None
    try:
        result = _run(route, batch, executor)
    except (PredictionFailed, BudgetExceeded) as exc:
        if route.fallback is None:
            if isinstance(exc, BudgetExceeded):  # no fallback: the late answer is still the answer
                result = exc.args[0].result()
            else:
                raise
        else:
            answered_by, role, fallback_from = route.fallback, "fallback", route.model.version
            reason = "timeout" if isinstance(exc, BudgetExceeded) else "error"
            batch = _validate(route.fallback, payload, limits) if route.fallback.features != route.model.features \
                else batch
            result = route.fallback.predict(batch.columns, batch.probabilities)
    ids = prediction_ids(batch.n_rows)
    body: dict[str, Any] = {
        "predictions": _jsonable(result.predictions),
        "model": target.name,
        "version": answered_by.version,
        "ids": ids,
    }
    if result.probabilities is not None:
        body["classes"] = result.classes
        body["probabilities"] = result.probabilities
    if fallback_from is not None:
        body["fallback"] = {"from_version": fallback_from, "reason": reason}
    return Answer(body, answered_by, role, batch, result, ids, time.perf_counter() - start,
                  fallback_from, reason, route.shadows)


def _validate(model: LoadedModel, payload: Any, limits: Limits) -> Batch:
    batch = parse_predict_request(payload, model.features, max_rows=limits.max_rows,
                                  vectorized_min_rows=limits.vectorized_min_rows)
    if batch.probabilities and not model.has_probabilities:
        raise ValidationFailed(
            "This model does not provide probabilities.",
            details={"errors": [{"row": None, "field": "parameters.probabilities",
                                 "messages": ["This model does not provide probabilities."]}], "error_count": 1},
        )
    return batch


def _run(route: Route, batch: Batch, executor: Executor | None) -> Prediction:
    """Predict with the chosen version, within the time budget when one is set and a pool exists."""
    if not route.budget_ms or executor is None:
        return route.model.predict(batch.columns, batch.probabilities)
    future = executor.submit(route.model.predict, batch.columns, batch.probabilities)
    try:
        return future.result(timeout=route.budget_ms / 1000)
    except FutureTimeout:
        raise BudgetExceeded(future) from None


def prediction_ids(n: int) -> list[str]:
    """Return ``n`` unique ids: one time-ordered random base per request plus the row index."""
    base = f"{time.time_ns():x}{secrets.token_hex(6)}"
    return [f"{base}-{i}" for i in range(n)]


def _jsonable(values: np.ndarray) -> Any:
    """Numeric arrays go to orjson as they are; object, string and bytes arrays become lists."""
    return values.tolist() if values.dtype.kind in "OUS" else values
