"""What happens after the answer is sent: record the request, run shadows, compare them.

``Observer.watch`` wraps one inference, whatever protocol carried it, in a single timing and
error-counting context (no view keeps a ``try/except`` of its own); the recording itself is
handed to ``defer``, which the HTTP layer runs once the response has gone out, so none of it
adds latency or failure to the live answer. Everything here swallows its own errors (logged):
an observer must never take a worker down. No Flask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import ServiceError
from service.monitoring import metrics
from service.monitoring.predlog import PredictionLog
from service.monitoring.quality import request_quality
from service.serving.inference import Answer, Target
from service.serving.runtime import LoadedModel
from service.store import RequestRecord, ShadowRecord, Store

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """One inference being watched: the view hands the answer over with ``answered``."""

    target: Target
    started: float
    answer: Answer | None = None

    def answered(self, answer: Answer) -> Answer:
        self.target, self.answer = answer.target, answer
        return answer


@dataclass
class Observer:
    store: Store | None
    log: PredictionLog | None = None
    #: shadows run on a background thread so a slow shadow never holds up the worker's next
    #: request; past this many waiting, shadow comparisons are dropped (and counted)
    max_pending_shadows: int = 4
    shadows_dropped: int = 0
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _slots: threading.BoundedSemaphore | None = field(default=None, repr=False)

    @contextmanager
    def watch(self, target: Target, request_id: str, defer: Callable[[Callable[[], None]], None]) -> Iterator[Watch]:
        """Time one inference and record its outcome through ``defer``: the answer, or the error raised."""
        watch = Watch(target, time.perf_counter())
        try:
            yield watch
        except Exception as exc:
            status, code = (exc.status, exc.code) if isinstance(exc, ServiceError) else (500, "internal_error")
            version = _version_of(exc) if isinstance(exc, ServiceError) else None
            seconds = time.perf_counter() - watch.started
            defer(lambda: self.failed(watch.target, request_id, status, code, seconds, version))
            raise
        if watch.answer is not None:
            answer = watch.answer
            defer(lambda: self.answered(answer, request_id))

    def answered(self, answer: Answer, request_id: str, status: int = 200) -> None:
        """Record a successful answer and its predictions, then run and compare its shadows."""
        target = answer.target
        metrics.observe_prediction(target.name, answer.version, "ok", answer.rows, answer.seconds)
        if answer.fallback_from is not None:
            metrics.observe_fallback(target.name, answer.fallback_from, answer.version, answer.fallback_reason or "error")
        try:
            record = RequestRecord(request_id, time.time(), target.name, answer.version, answer.role, status,
                                   answer.seconds * 1000, answer.rows, answer.fallback_from, None,
                                   summarise(answer.result.predictions, answer.model.manifest["task"]))
            if self.store is not None:
                self.store.record_requests([record])
            quality = request_quality(answer.model.features, answer.batch.columns,
                                      answer.model.manifest.get("reference_profile"))
            metrics.observe_data_quality(target.name, answer.version, quality.get("counts", {}))
            if self.log is not None:
                self.log.record(target.name, answer.version, request_id, answer.ids, answer.batch.columns,
                                answer.result.predictions, answer.result.probabilities, answer.seconds * 1000,
                                answer.model.features)
            if answer.shadows:
                self._schedule_shadows(answer)
        except Exception:
            log.exception("recording an answer failed", extra={"model": target.name})

    def failed(self, target: Target, request_id: str, status: int, code: str, seconds: float,
               version: int | None) -> None:
        """Record a request that ended in an error (4xx are kept apart from 5xx by status)."""
        metrics.observe_prediction(target.name, version, metrics.outcome_for(status))
        if code in metrics.VALIDATION_CODES:
            metrics.observe_validation_failure(target.name, code)
        try:
            if self.store is not None:
                self.store.record_requests([RequestRecord(request_id, time.time(), target.name, version, "error",
                                                          status, seconds * 1000, 0, None, code, None)])
        except Exception:
            log.exception("recording a failure failed", extra={"model": target.name})

    def _schedule_shadows(self, answer: Answer) -> None:
        target = answer.target
        if self._pool is None:  # created in the worker, after fork
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")
            self._slots = threading.BoundedSemaphore(self.max_pending_shadows)
        if not self._slots.acquire(blocking=False):
            self.shadows_dropped += 1
            log.warning("shadow comparison dropped: the shadow queue is full",
                        extra={"model": target.name, "dropped": self.shadows_dropped})
            return
        self._pool.submit(self._shadow, answer)

    def _shadow(self, answer: Answer) -> None:
        target = answer.target
        try:
            records = [compare_shadow(answer, shadow, target.name) for shadow in answer.shadows]
            if self.store is not None:
                self.store.record_shadow(records)
        except Exception:
            log.exception("shadow comparison failed", extra={"model": target.name})
        finally:
            self._slots.release()


def compare_shadow(answer: Answer, shadow: LoadedModel, name: str) -> ShadowRecord:
    """Predict the same rows with ``shadow`` and measure how far it is from the live answer."""
    live = answer.result
    base = dict(ts=time.time(), model=name, live_version=answer.version, shadow_version=shadow.version,
                rows=answer.rows)
    if shadow.features != answer.model.features:
        return ShadowRecord(**base, agreement=None, mean_abs_diff=None, error="schema_differs")
    try:
        theirs = shadow.predict(answer.batch.columns, probabilities=live.probabilities is not None)
    except Exception as exc:  # the shadow is user code too; its failure is a finding, not a fault
        return ShadowRecord(**base, agreement=None, mean_abs_diff=None, error=type(exc).__name__)
    if answer.model.manifest["task"] == "regression":
        diff = np.abs(np.asarray(live.predictions, float) - np.asarray(theirs.predictions, float))
        return ShadowRecord(**base, agreement=None, mean_abs_diff=float(diff.mean()))
    same = np.asarray(live.predictions) == np.asarray(theirs.predictions)
    per_class: dict[str, dict[str, int]] = {}
    for cls in np.unique(live.predictions):
        mask = np.asarray(live.predictions) == cls
        per_class[_key(cls)] = {"rows": int(mask.sum()), "agree": int(same[mask].sum())}
    mad = None
    if live.probabilities is not None and theirs.probabilities is not None \
            and np.shape(live.probabilities) == np.shape(theirs.probabilities):
        mad = float(np.abs(np.asarray(live.probabilities) - np.asarray(theirs.probabilities)).mean())
    return ShadowRecord(**base, agreement=float(same.mean()), mean_abs_diff=mad,
                        detail=orjson.dumps({"per_class": per_class}).decode())


def summarise(predictions: np.ndarray, task: str) -> str:
    """Summarise a batch's predictions so per-version distributions can be merged later."""
    if task == "regression":
        values = np.asarray(predictions, dtype=float)
        return orjson.dumps({"n": int(values.size), "sum": float(values.sum()),
                             "sumsq": float((values ** 2).sum()), "min": float(values.min()),
                             "max": float(values.max())}).decode()
    counts: Counter[str] = Counter()
    classes, numbers = np.unique(np.asarray(predictions), return_counts=True)
    for cls, count in zip(classes, numbers, strict=True):
        counts[_key(cls)] += int(count)
    return orjson.dumps({"classes": dict(counts)}).decode()


def _key(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return str(value).lower() if isinstance(value, bool) else str(value)


def _version_of(error: ServiceError) -> int | None:
    version = error.details.get("version") if isinstance(error.details, dict) else None
    return version if isinstance(version, int) else None
