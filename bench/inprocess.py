"""The same requests without HTTP: what the server could at best achieve per request.

Three layers are timed for each scenario so the server's figures can be read against them:
the estimator alone on a ready DataFrame, the full in-process path (``inference.predict``:
resolve, validate, predict, shape the answer), and validation alone. JSON decoding and
encoding are timed too, since the server pays them and the in-process path does not, and so
is the bare list-to-array conversion, the floor under any validation of a row-layout body.

What the server does after the answer is sent is timed as well: the work the observer's
background writer does for one answer (``Observer.write_batch`` of a batch of one: the request
row, the prediction log rows, data-quality counts and the Prometheus counters) with a real
SQLite ``Store`` in a temp file, once with the log keeping every prediction
(``PREDICTION_LOG_SAMPLE=1``, the default) and once keeping none (``0``). A real writer batches
several answers per transaction, so this is the most one answer can cost it. Every timed call
gets fresh prediction ids, so each one really inserts its rows (the log ignores ids it already
has). Everything runs on one thread, as a Gunicorn worker does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from bench.workload import Scenario
from service.config import Config
from service.monitoring.observe import Observer, _Answered
from service.monitoring.predlog import PredictionLog
from service.protocols import v1
from service.serving import inference, runtime
from service.serving.catalog import Catalog
from service.serving.validation import validate_rows
from service.store import Store

BUDGET_SECONDS = 0.4  # per measured call; long enough for a stable median, short for the 3-minute run
MIN_REPEATS = 7
MAX_REPEATS = 20_000


@dataclass(frozen=True)
class Timing:
    """Median and best of many repeats, in milliseconds."""

    median_ms: float
    best_ms: float
    repeats: int


@dataclass(frozen=True)
class InProcessResult:
    estimator: Timing
    full_path: Timing
    validation: Timing
    json: Timing
    backend: Timing  # LoadedModel.predict on validated columns: the served backend (ONNX Runtime or joblib) alone
    to_array: Timing  # np.asarray(instances, float64): the floor for any validation of row-layout JSON
    observe: Timing  # Observer.answered with the prediction log keeping every row (PREDICTION_LOG_SAMPLE=1)
    observe_unlogged: Timing  # the same with the log keeping none (PREDICTION_LOG_SAMPLE=0)


@dataclass(frozen=True)
class Observers:
    """Two observers on one real store (a temp SQLite file): prediction log on and off."""

    logged: Observer
    unlogged: Observer

    @classmethod
    def in_folder(cls, folder: Path) -> Observers:
        store = Store(folder / "predictions.db")
        return cls(Observer(store, PredictionLog(store, sample_rate=1.0)),
                   Observer(store, PredictionLog(store, sample_rate=0.0)))


def time_call(call: Callable[[], Any], budget: float = BUDGET_SECONDS) -> Timing:
    """Time ``call`` repeatedly after one warm-up call; the median resists scheduler noise."""
    call()
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < MIN_REPEATS or (time.perf_counter() < deadline and len(samples) < MAX_REPEATS):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return Timing(median(samples) * 1000, min(samples) * 1000, len(samples))


def time_with_setup(setup: Callable[[], Any], call: Callable[[Any], Any], budget: float = BUDGET_SECONDS) -> Timing:
    """Like ``time_call`` but ``call(setup())``, with ``setup`` left out of the timed part."""
    call(setup())
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < MIN_REPEATS or (time.perf_counter() < deadline and len(samples) < MAX_REPEATS):
        argument = setup()
        start = time.perf_counter()
        call(argument)
        samples.append(time.perf_counter() - start)
    return Timing(median(samples) * 1000, min(samples) * 1000, len(samples))


def limits_from_config() -> inference.Limits:
    """The limits the server runs with by default (MAX_BATCH_ROWS, VECTORIZED_MIN_ROWS)."""
    config = Config()
    return inference.Limits(config.max_batch_rows, config.vectorized_min_rows)


def load_models(root: Path, versions: dict[str, int]) -> dict[str, runtime.LoadedModel]:
    """Load the given version of each model through the runtime (verified before unpickling)."""
    return {name: runtime.load(root / name / str(v), name=name, version=v) for name, v in versions.items()}


def check_same_predictions(scenario: Scenario, model: runtime.LoadedModel, answer: inference.Answer) -> None:
    """The full path must give what the estimator gives, or the comparison is meaningless."""
    expected = np.asarray(model.estimator.predict(scenario.frame))
    got = np.asarray(answer.result.predictions)
    if got.shape != expected.shape or not np.allclose(got, expected):
        raise RuntimeError(f"{scenario.key}: in-process predictions differ from estimator.predict")


def measure(scenario: Scenario, model: runtime.LoadedModel, catalog: Catalog, limits: inference.Limits,
            observers: Observers, budget: float = BUDGET_SECONDS) -> InProcessResult:
    """Time the estimator, the full path, validation, JSON and the after-answer work for one scenario."""
    payload = orjson.loads(scenario.body)
    estimator, frame, proba = model.estimator, scenario.frame, scenario.probabilities
    target = inference.Target(scenario.model, scenario.version)

    def estimator_only() -> None:
        estimator.predict(frame)
        if proba:
            estimator.predict_proba(frame)

    def full_path() -> inference.Answer:
        return inference.predict(catalog, v1.decode(payload, target, max_rows=limits.max_rows), limits)

    def validation() -> None:
        request = v1.decode(payload, target, max_rows=limits.max_rows)
        validate_rows(request.layout, request.data, model.features, vectorized_min_rows=limits.vectorized_min_rows)

    answer = full_path()
    check_same_predictions(scenario, model, answer)

    def json_codec() -> None:
        orjson.loads(scenario.body)
        orjson.dumps(v1.encode(answer), option=orjson.OPT_SERIALIZE_NUMPY)

    def to_array() -> None:
        np.asarray(payload["instances"], dtype=np.float64)

    def fresh_answer() -> inference.Answer:
        # new prediction ids (as every request gets), so the log inserts rather than ignores
        return dataclasses.replace(answer, ids=inference.prediction_ids(answer.rows))

    def observe(observer: Observer) -> Callable[[inference.Answer], None]:
        # the writer thread's work for one answer, run here so the timing is not split across threads
        return lambda fresh: observer.write_batch([_Answered(fresh, f"bench-{fresh.ids[0]}", time.time())])

    columns = {name: scenario.frame[name].to_numpy() for name in scenario.frame.columns}

    def backend_only() -> None:
        model.predict(columns, proba)

    def timed(call: Callable[[], Any]) -> Timing:
        return time_call(call, budget)

    return InProcessResult(timed(estimator_only), timed(full_path), timed(validation), timed(json_codec),
                           timed(backend_only), timed(to_array), time_with_setup(fresh_answer, observe(observers.logged), budget),
                           time_with_setup(fresh_answer, observe(observers.unlogged), budget))


def measure_all(root: Path, scenarios: list[Scenario], scratch: Path,
                budget: float = BUDGET_SECONDS) -> dict[str, InProcessResult]:
    """Measure every scenario on one thread; run it while no server competes for the CPU.

    ``scratch`` holds the observers' SQLite store (a temp folder, never the repo's ``var/``).
    """
    models = load_models(root, {s.model: s.version or 1 for s in scenarios})
    catalog = Catalog(root, None, 0)
    catalog.refresh()
    limits = limits_from_config()
    scratch.mkdir(parents=True, exist_ok=True)
    observers = Observers.in_folder(scratch)
    with threadpool_limits(limits=1):
        return {s.key: measure(s, models[s.model], catalog, limits, observers, budget) for s in scenarios}
