"""What happens around and after each answer: count it, record it, run shadows, compare them.

``Observer.watch`` wraps one inference, whatever protocol carried it, in a single timing and
error-counting context (no view keeps a ``try/except`` of its own). An answer's record (its
request row and logged batch) is appended to the worker's spool in the request's thread, before
the answer leaves: one ``write`` to the page cache, so a killed worker loses only what it had not
answered. Everything else (metrics, data-quality counts, shadows, error rows) is only queued;
one background writer per worker (``service.monitoring.recorder``) does it, and the outbox
(``service.monitoring.outbox``) ships the spool to the store in batches, so a store that fails
costs spool space, never a prediction's latency or success. Everything here swallows its own
errors (logged): an observer must never take a worker down. No Flask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import ServiceError
from service.monitoring import metrics
from service.monitoring.outbox import Outbox
from service.monitoring.predlog import EncodedBatch, PredictionLog
from service.monitoring.quality import request_counts
from service.monitoring.record_format import pack
from service.monitoring.recorder import DEFAULT_CAPACITY, DEFAULT_CAPACITY_ROWS, Recorder
from service.serving.inference import Answer, Target, check_output
from service.serving.runtime import LoadedModel
from service.store import REQUEST_COLUMNS, RequestRecord, ShadowRecord, Store

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """One inference being watched: the view hands the answer over with ``answered``."""

    target: Target
    started: float
    protocol: str = "v1"
    answer: Answer | None = None

    def answered(self, answer: Answer) -> Answer:
        self.target, self.answer = answer.target, answer
        return answer


@dataclass
class _Answered:
    answer: Answer
    request_id: str
    ts: float
    protocol: str = "v1"
    #: its record is in the spool already (written before the answer left): the writer only counts it
    spooled: bool = False
    summary: str | None = None


@dataclass(frozen=True)
class _Failed:
    record: RequestRecord
    code: str
    protocol: str = "v1"


@dataclass
class Observer:
    store: Store | None
    log: PredictionLog | None = None
    #: write one row per request to the ``requests`` table (traffic, errors and latency figures)
    record_requests: bool = True
    #: count missing, out-of-range and unseen input values per batch, for the data-quality metric
    check_quality: bool = True
    #: records waiting for the writer at most; past it they are dropped and counted
    capacity: int = DEFAULT_CAPACITY
    #: rows of the records waiting for the writer at most (their memory); past it they are dropped and counted
    capacity_rows: int = DEFAULT_CAPACITY_ROWS
    #: the spool and the shipping to the store; None: one without a spool (records wait in memory)
    outbox: Outbox | None = None
    #: shadows run on a background thread so a slow shadow never holds up the worker's next
    #: request; past this many waiting, shadow comparisons are dropped (and counted)
    max_pending_shadows: int = 4
    shadows_dropped: int = 0
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _slots: threading.BoundedSemaphore | None = field(default=None, repr=False)
    _recorder: Recorder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.outbox is None and self.store is not None:
            self.outbox = Outbox(self.store, self.log, None, on_drop=metrics.observe_record_dropped)
        self._recorder = Recorder(self.write_batch, capacity=self.capacity, capacity_rows=self.capacity_rows,
                                  on_drop=self._queue_full, name="observer-writer")

    def _queue_full(self, count: int) -> None:
        if self.outbox is not None:
            self.outbox.drop("queue_full", count)
        else:
            metrics.observe_record_dropped("queue_full", count)

    def start(self) -> None:
        """Start shipping in this process now, so what workers gone before it left reaches the store."""
        if self.outbox is not None and self.outbox.background:
            self.outbox.start()

    @contextmanager
    def watch(self, target: Target, request_id: str, protocol: str = "v1") -> Iterator[Watch]:
        """Time one inference and queue its outcome: the answer, or the error raised (re-raised as is).

        ``protocol`` names the codec that carried it (v1, v2, mlflow), for the per-protocol metric.
        """
        watch = Watch(target, time.perf_counter(), protocol)
        try:
            yield watch
        except Exception as exc:
            status, code = (exc.status, exc.code) if isinstance(exc, ServiceError) else (500, "internal_error")
            version = _version_of(exc) if isinstance(exc, ServiceError) else None
            self.failed(watch.target, request_id, status, code, time.perf_counter() - watch.started, version,
                        protocol=watch.protocol)
            raise
        if watch.answer is not None:
            self.answered(watch.answer, request_id, protocol=watch.protocol)

    def answered(self, answer: Answer, request_id: str, *, protocol: str = "v1") -> None:
        """Spool the answer's record, then queue it for counting; its shadows run once it is written.

        The record reaches the spool (the kernel's page cache: a killed worker cannot take it
        back) in the request's own thread, before the answer leaves, so a worker's SIGKILL loses
        only the requests it had not answered. Everything else (metrics, data quality, shadows)
        is the writer's, off the request's path.
        """
        item = _Answered(answer, request_id, time.time(), protocol)
        if self.outbox is not None and self.outbox.spool is not None:
            self._spool_now(item)
        self._hand_off(item, answer.rows)

    def _spool_now(self, item: _Answered) -> None:
        try:
            item.summary = self._summary(item.answer)
            row = self._request_row(item) if self.record_requests else None
            batch = self._encode_log([item], count_failure=False).get(id(item))
            if row is not None or batch is not None:
                self.outbox.put([pack(row, batch)])
            item.spooled = True
        except Exception:  # the writer tries again, and counts what fails there
            log.debug("spooling in the request's thread failed; the writer records it", exc_info=True)

    def failed(self, target: Target, request_id: str, status: int, code: str, seconds: float,
               version: int | None, *, protocol: str = "v1") -> None:
        """Queue a request that ended in an error (4xx are kept apart from 5xx by status)."""
        record = RequestRecord(request_id, time.time(), target.name, version, "error", status, seconds * 1000, 0,
                               None, code, None)
        self._hand_off(_Failed(record, code, protocol), 1)

    def _hand_off(self, item: _Answered | _Failed, rows: int) -> None:
        """Queue ``item`` for the writer; when its queue is full, spool it in this thread.

        A full queue means the writer falls behind (a burst of large batches): the request that
        finds it full does its own recording, which the writer would have done with the same CPU,
        so an overloaded worker slows down instead of losing what it answered.
        """
        if self._recorder.offer(item, rows):
            return
        try:
            self.write_batch([item])
        except Exception:
            log.exception("recording in the request's thread failed")
            self._queue_full(1)

    def flush(self) -> None:
        """Write what is queued now to the store, in the caller's thread (tests, the CLI)."""
        self._recorder.flush()
        if self.outbox is not None:
            self.outbox.pump()

    def close(self, timeout: float = 10.0) -> bool:
        """Hand everything queued to the outbox, ship what the store takes within ``timeout`` and
        stop the writer (a worker's graceful exit). True when every record is in the store; what
        is left waits in the spool for the next worker (``recording()`` says how much)."""
        deadline = time.monotonic() + timeout
        drained = self._recorder.close(timeout / 2)
        shipped = self.outbox.close(deadline) if self.outbox is not None else True
        return drained and shipped

    def recording(self) -> dict[str, Any]:
        """The record path's state, for ``/readyz``: ok, spooling or degraded, and the counts."""
        if self.outbox is None:
            return {"status": "off"}
        return {**self.outbox.status(), "queued": self.pending}

    @property
    def pending(self) -> int:
        return self._recorder.pending

    def write_batch(self, items: list[Any]) -> None:
        """Count, summarise and write one batch of outcomes in one transaction (the writer's thread)."""
        answers = [item for item in items if isinstance(item, _Answered)]
        requests = []
        for item in items:
            if isinstance(item, _Failed):
                record = item.record
                outcome = metrics.outcome_for(record.status)
                metrics.observe_prediction(record.model, record.version, outcome)
                metrics.observe_protocol(record.model, item.protocol, outcome)
                if item.code in metrics.VALIDATION_CODES:
                    metrics.observe_validation_failure(record.model, item.code)
                requests.append(record)
            else:
                requests.append(self._count_answer(item))
                metrics.observe_protocol(item.answer.target.name, item.protocol, "ok")
        if self.check_quality:
            self._count_quality(answers)
        logged = self._encode_log([item for item in answers if not item.spooled])
        if self.outbox is not None:
            records = []
            for record, item in zip(requests, items, strict=True):
                if getattr(item, "spooled", False):
                    continue
                row = tuple(getattr(record, c) for c in REQUEST_COLUMNS) if self.record_requests else None
                batch = logged.get(id(item))
                if row is not None or batch is not None:
                    records.append(pack(row, batch))
            self.outbox.put(records)
        for item in answers:
            if item.answer.shadows:
                self._schedule_shadows(item.answer)

    def _count_answer(self, item: _Answered) -> RequestRecord | None:
        answer, name = item.answer, item.answer.target.name
        metrics.observe_prediction(name, answer.version, "ok", answer.rows, answer.seconds)
        if answer.fallback_from is not None:
            metrics.observe_fallback(name, answer.fallback_from, answer.version, answer.fallback_reason or "error")
        if item.spooled:
            return None
        item.summary = self._summary(answer)
        return self._record_of(item)

    @staticmethod
    def _summary(answer: Answer) -> str | None:
        try:
            return summarise(answer.result.predictions, answer.model.manifest["task"])
        except Exception:
            log.exception("summarising predictions failed", extra={"model": answer.target.name})
            return None

    @staticmethod
    def _record_of(item: _Answered) -> RequestRecord:
        answer = item.answer
        return RequestRecord(item.request_id, item.ts, answer.target.name, answer.version, answer.role, 200,
                             answer.seconds * 1000, answer.rows, answer.fallback_from, None, item.summary)

    def _request_row(self, item: _Answered) -> tuple[Any, ...]:
        record = self._record_of(item)
        return tuple(getattr(record, c) for c in REQUEST_COLUMNS)

    def _count_quality(self, answers: list[_Answered]) -> None:
        """Count data-quality problems once per (model, version) in the batch, over all its rows."""
        groups: dict[tuple[str, int], list[Answer]] = defaultdict(list)
        for item in answers:
            groups[(item.answer.target.name, item.answer.version)].append(item.answer)
        for (name, version), group in groups.items():
            try:
                model = group[0].model
                profile = model.manifest.get("reference_profile")
                blocks = [a.batch.block for a in group]
                if all(block is not None for block in blocks):  # every batch one float block: counted as one
                    block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
                    counts = request_counts(model.features, profile, block=block)
                else:
                    columns = {f["name"]: _concatenate([a.batch.columns[f["name"]] for a in group])
                               for f in model.features}
                    counts = request_counts(model.features, profile, columns=columns)
                metrics.observe_data_quality(name, version, counts)
            except Exception:
                log.exception("data-quality check failed", extra={"model": name, "version": version})

    def _encode_log(self, answers: list[_Answered], *, count_failure: bool = True) -> dict[int, EncodedBatch]:
        """Each answer's logged batch, by ``id()`` of its item (none for an unsampled batch).

        ``count_failure=False``: raise instead (the request's thread leaves the item to the writer).
        """
        if self.log is None:
            return {}
        encoded = {}
        for item in answers:
            answer = item.answer
            try:
                batch = self.log.encode(answer.target.name, answer.version, item.request_id, answer.ids,
                                        answer.batch.columns, answer.result.predictions, answer.result.probabilities,
                                        answer.seconds * 1000, answer.model.features, ts=item.ts,
                                        subject=answer.model.manifest.get("subject"), block=answer.batch.block)
            except Exception as exc:  # one bad batch must not cost the others their records
                if not count_failure:
                    raise
                log.exception("encoding a logged batch failed", extra={"model": answer.target.name})
                if self.outbox is not None:
                    self.outbox.drop("encoding_failed")
                if self.store is not None:
                    self.store.write_failed("predictions", exc)
                continue
            if batch is not None:
                encoded[id(item)] = batch
        return encoded

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


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def compare_shadow(answer: Answer, shadow: LoadedModel, name: str) -> ShadowRecord:
    """Predict the same rows with ``shadow`` and measure how far it is from the live answer."""
    live = answer.result
    base = dict(ts=time.time(), model=name, live_version=answer.version, shadow_version=shadow.version,
                rows=answer.rows)
    if shadow.features != answer.model.features:
        return ShadowRecord(**base, agreement=None, mean_abs_diff=None, error="schema_differs")
    try:
        theirs = check_output(shadow, shadow.predict(answer.batch.columns, probabilities=live.probabilities is not None))
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


#: Up to this many predictions, ``summarise`` counts labels in Python (cheaper than np.unique's sort for a few)
SMALL_BATCH = 64


def summarise(predictions: np.ndarray, task: str) -> str:
    """Summarise a batch's predictions so per-version distributions can be merged later."""
    if task == "regression":
        values = np.asarray(predictions, dtype=float)
        return orjson.dumps({"n": int(values.size), "sum": float(values.sum()),
                             "sumsq": float((values ** 2).sum()), "min": float(values.min()),
                             "max": float(values.max())}).decode()
    counts: Counter[str] = Counter()
    values = np.asarray(predictions)
    if values.size <= SMALL_BATCH:  # a few labels: counted in Python, in np.unique's (sorted) order, without its sort
        pairs = sorted(Counter(values.reshape(-1).tolist()).items())
    else:
        classes, numbers = np.unique(values, return_counts=True)
        pairs = zip(classes.tolist(), numbers.tolist(), strict=True)
    for cls, count in pairs:
        counts[_key(cls)] += count
    return orjson.dumps({"classes": dict(counts)}).decode()


def _key(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return str(value).lower() if isinstance(value, bool) else str(value)


def _version_of(error: ServiceError) -> int | None:
    version = error.details.get("version") if isinstance(error.details, dict) else None
    return version if isinstance(version, int) else None
