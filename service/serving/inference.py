"""The one prediction path behind every wire format: route -> validate -> predict.

Codecs (``service.protocols``) turn a body into a protocol-neutral ``PredictRequest`` and
turn the ``Answer`` back into their own body; nothing here knows a wire format. When the
chosen version raises, answers NaN or infinity (``check_output``: JSON has no such numbers, and
a client must never read ``null`` as a prediction) or overruns the model's time budget, the
fallback version answers instead and the answer says so. No Flask.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from service.errors import ModelOutputInvalid, PredictionFailed, ValidationFailed
from service.serving.catalog import Catalog, Route
from service.serving.runtime import LoadedModel, Prediction
from service.serving.validation import ValidatedBatch, validate_rows

log = logging.getLogger(__name__)

#: Row positions a ``model_output_invalid`` error names at most: enough to find them, bounded for big batches.
MAX_ROWS_NAMED = 20


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


#: How a request's rows arrive: a list of objects, a list of arrays in schema order, columns, or
#: a 2-D numpy array in schema order (tensor protocols).
LAYOUTS = ("records", "rows", "columns", "matrix")


@dataclass(frozen=True)
class PredictRequest:
    """One predict request, whatever protocol carried it: the rows are JSON values, unchecked."""

    target: Target
    layout: str  # one of LAYOUTS
    data: Any  # list of dicts | list of lists | dict of column lists | 2-D numpy array
    probabilities: bool = False


@dataclass(frozen=True)
class Answer:
    """A finished prediction, protocol-neutral: what codecs encode and observers record."""

    request: PredictRequest
    model: LoadedModel  # the version that answered
    role: str  # production | canary | pinned | label | fallback
    batch: ValidatedBatch
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
    def target(self) -> Target:
        return self.request.target

    @property
    def rows(self) -> int:
        return self.batch.n_rows


class BudgetExceeded(Exception):
    """The chosen version did not answer within the model's time budget."""


def predict(catalog: Catalog, request: PredictRequest, limits: Limits, *,
            executor: Executor | None = None, rand: Callable[[], float] = random.random) -> Answer:
    """Answer one predict request for a model, a pinned version or a label."""
    start = time.perf_counter()
    target = request.target
    route = catalog.route(target.name, target.version, target.label, target.routing_key, rand)
    batch = _validate(route.model, request, limits)
    answered_by, role, fallback_from, reason = route.model, route.role, None, None
    try:
        result = check_output(route.model, _run(route, batch, request.probabilities, executor))
    except (PredictionFailed, BudgetExceeded) as exc:
        if route.fallback is None:
            if isinstance(exc, BudgetExceeded):  # no fallback: the late answer is still the answer
                result = check_output(route.model, exc.args[0].result())
            else:
                raise
        else:
            answered_by, role, fallback_from = route.fallback, "fallback", route.model.version
            reason = "timeout" if isinstance(exc, BudgetExceeded) else "error"
            # the fallback hides the failure from the client: the log is where an operator sees it
            log.warning("a model version failed; its fallback answers",
                        extra={"model": target.name, "version": route.model.version,
                               "fallback_version": route.fallback.version,
                               "code": getattr(exc, "code", "timeout"), "details": getattr(exc, "details", {})})
            if route.fallback.features != route.model.features:
                batch = _validate(route.fallback, request, limits)
            result = check_output(route.fallback, route.fallback.predict(batch.columns, request.probabilities))
    return Answer(request, answered_by, role, batch, result, prediction_ids(batch.n_rows),
                  time.perf_counter() - start, fallback_from, reason, route.shadows)


def check_output(model: LoadedModel, result: Prediction) -> Prediction:
    """Return ``result`` when every number in it is finite; raise ``ModelOutputInvalid`` otherwise.

    One vectorised ``np.isfinite`` per float output; integer, boolean and string labels cannot
    hold NaN and are not looked at. The error counts rows and names their positions, never a value.
    """
    found = {}
    for output, values in (("predictions", result.predictions), ("probabilities", result.probabilities)):
        bad = _bad_rows(values)
        if bad is not None:
            found[output] = bad
    if not found:
        return result
    raise _invalid(model, result, found)


def _bad_rows(values: Any) -> np.ndarray | None:
    """A per-row mask of the rows holding NaN or infinity (None, NaN for object arrays), or None if none do."""
    if values is None:
        return None
    values = np.atleast_1d(np.asarray(values))
    kind = values.dtype.kind
    if kind in "fc":
        ok = np.isfinite(values)
    elif kind == "O":  # labels as Python objects: only a missing one (None, NaN) has no JSON form
        ok = ~pd.isna(values)
    else:
        return None
    if ok.all():
        return None
    bad = ~ok
    return bad.reshape(len(bad), -1).any(axis=1) if bad.ndim > 1 else bad


def _invalid(model: LoadedModel, result: Prediction, found: dict[str, np.ndarray]) -> ModelOutputInvalid:
    n_rows = len(np.atleast_1d(result.predictions))
    outputs, rows = {}, np.zeros(n_rows, dtype=bool)
    for output, bad in found.items():
        values = np.asarray(getattr(result, output))
        counts: dict[str, int] = {"rows": int(bad.sum())}
        if values.dtype.kind in "fc":
            counts.update(nan=int(np.isnan(values).sum()), infinity=int(np.isinf(values).sum()))
        else:
            counts["missing"] = int(pd.isna(values).sum())
        outputs[output] = counts
        if len(bad) == n_rows:
            rows |= bad
    said = " and ".join(f"in its {output} for {counts['rows']} of {n_rows} rows" for output, counts in outputs.items())
    named = np.flatnonzero(rows)[:MAX_ROWS_NAMED].tolist()
    return ModelOutputInvalid(
        f"Model {model.name!r} version {model.version} returned NaN or infinity, which JSON cannot carry, {said}; "
        "no prediction was returned.",
        details={"model": model.name, "version": model.version, "reason": "non_finite_output", "rows": n_rows,
                 "outputs": outputs, "row_positions": named})


def _validate(model: LoadedModel, request: PredictRequest, limits: Limits) -> ValidatedBatch:
    batch = validate_rows(request.layout, request.data, model.features,
                          vectorized_min_rows=limits.vectorized_min_rows)
    if request.probabilities and not model.has_probabilities:
        raise ValidationFailed(
            "This model does not provide probabilities.",
            details={"errors": [{"row": None, "field": "parameters.probabilities",
                                 "messages": ["This model does not provide probabilities."]}], "error_count": 1},
        )
    return batch


def _run(route: Route, batch: ValidatedBatch, probabilities: bool, executor: Executor | None) -> Prediction:
    """Predict with the chosen version, within the time budget when one is set and a pool exists."""
    if not route.budget_ms or executor is None:
        return route.model.predict(batch.columns, probabilities)
    future = executor.submit(route.model.predict, batch.columns, probabilities)
    try:
        return future.result(timeout=route.budget_ms / 1000)
    except FutureTimeout:
        raise BudgetExceeded(future) from None


def prediction_ids(n: int) -> list[str]:
    """Return ``n`` unique ids: one time-ordered random base per request plus the row index."""
    base = f"{time.time_ns():x}{secrets.token_hex(6)}"
    return [f"{base}-{i}" for i in range(n)]
