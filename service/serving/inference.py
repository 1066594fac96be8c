"""The one prediction path behind every wire format: route -> validate -> predict.

Codecs (``service.protocols``) turn a body into a protocol-neutral ``PredictRequest`` and
turn the ``Answer`` back into their own body; nothing here knows a wire format. When the
chosen version raises, answers NaN or infinity (``check_output``: JSON has no such numbers, and
a client must never read ``null`` as a prediction) or overruns the model's time budget, the
fallback version answers instead and the answer says so. NaN or infinity for rows whose inputs
lie far outside what the version was trained on, or a model that raises on a batch holding such
rows, is the client's doing, not the model's: a 422 ``input_out_of_domain`` with no fallback,
which the rollout guard does not count against the version (else any predict key could push a
canary over its error rate with absurd numbers). No Flask.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InputOutOfDomain, ModelOutputInvalid, PredictionFailed, ValidationFailed
from service.serving.catalog import Catalog, Route
from service.serving.runtime import LoadedModel, Prediction
from service.serving.validation import ValidatedBatch, validate_rows

log = logging.getLogger(__name__)

#: Row positions a ``model_output_invalid`` error names at most: enough to find them, bounded for big batches.
MAX_ROWS_NAMED = 20
#: An input is far outside a version's training data when its magnitude exceeds this many times the
#: largest magnitude (at least 1) the reference profile records for its feature: a healthy model's
#: arithmetic overflows only for such inputs, so NaN or infinity there is the input's doing.
FAR_FACTOR = 1e3
FAR_MESSAGE = f"More than {FAR_FACTOR:g} times the magnitude of the training data."
DOMAIN_CACHE_SIZE = 256
FIELDS_SAID = 5  # field names in the message; details list them all


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
            executor: Executor | None = None, rand: Callable[[], float] = random.random,
            admit: Callable[[LoadedModel], None] | None = None) -> Answer:
    """Answer one predict request for a model, a pinned version or a label.

    ``admit`` sees the chosen version before any work on the rows and may refuse by raising:
    what an explanation may cost depends on the version that will explain it.
    """
    start = time.perf_counter()
    target = request.target
    route = catalog.route(target.name, target.version, target.label, target.routing_key, rand)
    if admit is not None:
        admit(route.model)
    batch = _validate(route.model, request, limits)
    answered_by, role, fallback_from, reason = route.model, route.role, None, None
    try:
        result = check_output(route.model, _run(route, batch, request.probabilities, executor), batch.columns)
    except (PredictionFailed, BudgetExceeded) as exc:
        if type(exc) is PredictionFailed and (refused := _raised_out_of_domain(route.model, batch)) is not None:
            raise refused from None
        if route.fallback is None:
            if isinstance(exc, BudgetExceeded):  # no fallback: the late answer is still the answer
                result = check_output(route.model, exc.args[0].result(), batch.columns)
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
            result = check_output(route.fallback, route.fallback.predict(batch.columns, request.probabilities),
                                  batch.columns)
    return Answer(request, answered_by, role, batch, result, prediction_ids(batch.n_rows),
                  time.perf_counter() - start, fallback_from, reason, route.shadows)


def check_output(model: LoadedModel, result: Prediction, columns: dict[str, np.ndarray] | None = None) -> Prediction:
    """Return ``result`` when every number in it is finite; raise otherwise.

    One vectorised ``np.isfinite`` per float output; integer, boolean and string labels cannot
    hold NaN and are not looked at. Given the validated input ``columns``, rows that each hold a
    numeric input far outside the training data (``FAR_FACTOR``) raise ``InputOutOfDomain`` (422);
    any other non-finite answer raises ``ModelOutputInvalid`` (500). Errors name rows and fields,
    never a value.
    """
    found = {}
    for output, values in (("predictions", result.predictions), ("probabilities", result.probabilities)):
        bad = _bad_rows(values)
        if bad is not None:
            found[output] = bad
    if not found:
        return result
    if columns is not None:
        refused = _out_of_domain(model, columns, found, len(np.atleast_1d(result.predictions)))
        if refused is not None:
            raise refused
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
        import pandas as pd  # here only: a run of numbers (a batch run) never imports it

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
            import pandas as pd

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


_domains: dict[int, tuple[dict[str, Any], dict[str, float]]] = {}
_domains_lock = threading.Lock()


def input_bounds(manifest: dict[str, Any]) -> dict[str, float]:
    """Per numeric feature, the magnitude beyond which an input is far outside the training data.

    Read from the reference profile (min and max; a personal-data feature's rounded bin edges),
    else the feature's declared bounds; a feature with neither has no bound, so it is never far.
    Built once per manifest object (loaded manifests are not changed), like ``model_schema``.
    """
    hit = _domains.get(id(manifest))
    if hit is not None and hit[0] is manifest:
        return hit[1]
    profile = (manifest.get("reference_profile") or {}).get("features") or {}
    bounds = {}
    for feature in manifest["input"]["features"]:
        if feature.get("type") not in ("float", "int"):
            continue  # categories and booleans are looked up, not multiplied: they do not overflow
        seen = profile.get(feature["name"]) or {}
        ends = [seen.get("min"), seen.get("max"), *(seen.get("bin_edges") or ())]
        magnitudes = [abs(float(e)) for e in ends if isinstance(e, (int, float)) and math.isfinite(e)]
        if not magnitudes:
            magnitudes = [abs(float(feature[b])) for b in ("min", "max")
                          if isinstance(feature.get(b), (int, float)) and math.isfinite(feature[b])]
        if magnitudes:
            bounds[feature["name"]] = FAR_FACTOR * max(1.0, *magnitudes)
    with _domains_lock:
        if len(_domains) >= DOMAIN_CACHE_SIZE:
            _domains.pop(next(iter(_domains)), None)
        _domains[id(manifest)] = (manifest, bounds)
    return bounds


def _out_of_domain(model: LoadedModel, columns: dict[str, np.ndarray], found: dict[str, np.ndarray],
                   n_rows: int) -> InputOutOfDomain | None:
    """The 422 when every non-finite row has an input far outside the training data, else None."""
    rows = np.zeros(n_rows, dtype=bool)
    for bad in found.values():
        if len(bad) != n_rows:
            return None  # an output that does not line up with the rows: the model's fault
        rows |= bad
    positions = np.flatnonzero(rows)
    far, names = _far_inputs(model, columns, positions)
    if not len(positions) or not far.any(axis=1).all():
        return None
    return _domain_error(model, positions, far, names, n_rows,
                         f"gives no finite answer for {len(positions)} of {n_rows} rows: each holds")


def _raised_out_of_domain(model: LoadedModel, batch: ValidatedBatch) -> InputOutOfDomain | None:
    """The 422 when a model that raised was given rows far outside its training data, else None.

    Which row made it raise is unknown, so any far row is enough: without it the batch would show
    whether the model itself is broken (a 500, then, counted against the version).
    """
    positions = np.arange(batch.n_rows)
    far, names = _far_inputs(model, batch.columns, positions)
    hit = far.any(axis=1)
    if not hit.any():
        return None
    return _domain_error(model, positions[hit], far[hit], names, batch.n_rows,
                         f"failed on a batch where {int(hit.sum())} of {batch.n_rows} rows each hold")


def _far_inputs(model: LoadedModel, columns: dict[str, np.ndarray], positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """For the rows at ``positions``: which bounded numeric inputs are far (a rows x names mask), and the names."""
    bounds = input_bounds(model.manifest)
    names = [name for name in bounds if name in columns]
    far = np.zeros((len(positions), len(names)), dtype=bool)
    for j, name in enumerate(names):
        try:
            values = np.asarray(columns[name], dtype=float)[positions]
        except (TypeError, ValueError, IndexError):
            continue
        far[:, j] = np.abs(values) > bounds[name]  # NaN (a missing value) is never far
    return far, names


def _domain_error(model: LoadedModel, positions: np.ndarray, far: np.ndarray, names: list[str], n_rows: int,
                  what: str) -> InputOutOfDomain:
    named = [(int(row), [names[j] for j in np.flatnonzero(far[i])]) for i, row in enumerate(positions[:MAX_ROWS_NAMED])]
    fields = sorted({names[j] for j in np.flatnonzero(far.any(axis=0))})
    listed = ", ".join(fields[:FIELDS_SAID]) + (f" and {len(fields) - FIELDS_SAID} more" if len(fields) > FIELDS_SAID else "")
    return InputOutOfDomain(
        f"Model {model.name!r} version {model.version} {what} a value far outside what the model was trained on "
        f"(in {listed}); send values within the range of the training data.",
        details={"model": model.name, "version": model.version, "reason": "input_out_of_domain", "rows": n_rows,
                 "row_positions": [row for row, _ in named], "fields": fields,
                 "errors": [{"row": row, "field": name, "messages": [FAR_MESSAGE]} for row, found_names in named
                            for name in found_names],
                 "error_count": int(far.sum())})


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
        return route.model.predict(batch.columns, probabilities, batch.block)
    future = executor.submit(route.model.predict, batch.columns, probabilities, batch.block)
    try:
        return future.result(timeout=route.budget_ms / 1000)
    except FutureTimeout:
        raise BudgetExceeded(future) from None


def prediction_ids(n: int) -> list[str]:
    """Return ``n`` unique ids: one time-ordered random base per request plus the row index."""
    base = f"{time.time_ns():x}{secrets.token_hex(6)}"
    return [f"{base}-{i}" for i in range(n)]
