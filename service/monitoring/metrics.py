"""Prometheus metrics: the process-wide instance, the never-raising calls the service makes, the scrape.

What is counted and how its labels are bounded is ``service.monitoring.metric_families``
(its names are re-exported here, so callers keep ``metrics.PREFIX``, ``metrics.Metrics``).

Under Gunicorn the values live in prometheus-client's multiprocess files (where, when they are
emptied, how a full disk and dead workers are survived: ``service.monitoring.multiproc``);
every scrape reads them into a fresh registry. Without ``PROMETHEUS_MULTIPROC_DIR`` (unit
tests, waitress, a REPL) the same functions work in a single process. Each worker publishes
its own CPU seconds, memory and open fds with a ``pid`` label. The metric objects are built on
first use, so importing this module does nothing, and no observation ever raises into a
request (a failed one is counted). No Flask: the request hooks and ``GET /metrics`` live in
``service.api.metrics``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec

from service.monitoring import multiproc
from service.monitoring.metric_families import (  # noqa: F401  (part of this API)
    BATCH_BUCKETS,
    FALLBACK_REASONS,
    FEATURE_LABELS,
    LATENCY_BUCKETS,
    LATENCY_OBJECTIVE_SECONDS,
    MAX_VALUES_PER_LABEL,
    METHODS,
    MONITORING_GAUGES,
    OUTCOMES,
    PREDICTION_FEATURE,
    PREFIX,
    PROCESS_FIGURES,
    PROCESS_SAMPLE_SECONDS,
    PROTOCOLS,
    QUALITY_CHECKS,
    TOKEN_RE,
    UNMATCHED_ROUTE,
    VALIDATION_CODES,
    Metrics,
    use_feature_names,
)
from service.monitoring.multiproc import MULTIPROC_ENV, multiprocess_dir  # noqa: F401  (part of this API)

#: Reads of the metrics folder per scrape before a file that vanished mid-read is an error.
SCRAPE_ATTEMPTS = 3

log = logging.getLogger(__name__)

P = ParamSpec("P")


# -- processes (called from gunicorn.conf.py, in the master; the work is in ``multiproc``) -----------


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Create and empty the metrics folder and export it to workers forked later (see ``multiproc.prepare``)."""
    return multiproc.prepare(path)


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges and merge its counts into the archives; call it from ``child_exit``."""
    if multiprocess_dir() is None:
        return
    try:
        multiproc.mark_dead(pid)
    except Exception:  # the master must outlive any bookkeeping problem
        log.exception("could not clean up a dead worker's metrics", extra={"pid": pid})


# -- the process-wide instance and the functions the service calls -------------------------------

_current: Metrics | None = None
_build_lock = threading.Lock()
_warned: set[str] = set()


def warn_once(where: str) -> None:
    """Count a failure to record metrics; log it the first time it happens at ``where``, then stay quiet."""
    if where not in _warned:
        _warned.add(where)
        log.warning("metrics observation dropped (reported once)", exc_info=True, extra={"where": where})
    try:
        if _current is not None:
            _current.write_failures.inc()
    except Exception:  # nosec B110  # noqa: S110  counting the failure must not be a second one
        pass


def current() -> Metrics:
    """Return this process's metrics, building them on first use (after fork, in a worker)."""
    global _current
    if _current is None:
        with _build_lock:
            if _current is None:
                _current = _build()
    return _current


def _build() -> Metrics:
    from prometheus_client import CollectorRegistry, values

    if multiprocess_dir() is None:
        return Metrics(CollectorRegistry(auto_describe=True))
    multiproc.install()
    try:
        metrics = Metrics(None)
        metrics.sample_process(force=True)
        return metrics
    except OSError:
        # No room for this worker's files: it serves on, its figures kept in memory and unexported.
        log.error("metrics folder unusable (full?); this worker's metrics stay in memory and are not exported",
                  exc_info=True, extra={"path": str(multiprocess_dir())})
        values.ValueClass = values.MutexValue
        return Metrics(CollectorRegistry(auto_describe=True))


def _never_raises(func: Callable[P, None]) -> Callable[P, None]:
    """Log a failed observation once per function instead of failing the caller."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            warn_once(func.__name__)

    return wrapper


@_never_raises
def observe_prediction(model: str, version: int | None, outcome: str, rows: int = 0, seconds: float | None = None) -> None:
    """Count a predict request (``outcome`` ok, invalid or error) and, when ok, its rows and time."""
    current().observe_prediction(model, version, outcome, rows, seconds)


@_never_raises
def observe_protocol(model: str, protocol: str, outcome: str) -> None:
    """Count a predict request by the wire protocol that carried it."""
    current().observe_protocol(model, protocol, outcome)


@_never_raises
def observe_record_dropped(reason: str, count: int = 1) -> None:
    """Count records lost on their way to the store, by reason (``outbox.DROP_REASONS``)."""
    current().records_dropped.labels(reason).inc(count)


@_never_raises
def observe_store_write_failure(table: str, reason: str) -> None:
    """Count a failed write to the store, by table and reason (``store.failures.REASONS``)."""
    current().store_write_failures.labels(table, reason).inc()


@_never_raises
def observe_spool(spooled_bytes: int, oldest_seconds: float) -> None:
    """Set this worker's spool gauges."""
    metrics = current()
    metrics.spool_bytes.set(spooled_bytes)
    metrics.spool_oldest.set(oldest_seconds)


@_never_raises
def observe_validation_failure(model: str, code: str) -> None:
    """Count a predict request refused for its input, by error code (e.g. ``validation_failed``)."""
    current().observe_validation_failure(model, code)


@_never_raises
def observe_model_loaded(model: str, version: int, manifest: Mapping[str, Any]) -> None:
    """Publish a loaded version's info (sha256, scikit-learn) and admit it to the label sets."""
    current().observe_model_loaded(model, version, manifest)


@_never_raises
def observe_model_removed(model: str, version: int) -> None:
    """Set a version's info gauge to 0 once it is no longer served (gone from disk)."""
    current().observe_model_removed(model, version)


@_never_raises
def observe_load_failure(model: str, version: int) -> None:
    """Count a version refused at load (bad hash, signature, pickle)."""
    current().observe_load_failure(model, version)


@_never_raises
def observe_data_quality(model: str, version: int, counts: Mapping[str, int]) -> None:
    """Count a request's input values that are missing, outside the training range or unseen."""
    current().observe_data_quality(model, version, counts)


@_never_raises
def observe_fallback(model: str, from_version: int, to_version: int, reason: str = "error") -> None:
    """Count an answer given by ``to_version`` because ``from_version`` failed or was too slow."""
    current().observe_fallback(model, from_version, to_version, reason)


@_never_raises
def observe_checkpoint(point: Any) -> None:
    """Publish the newest audit checkpoint: the records it anchors and when it was signed."""
    current().audit_checkpoint_seq.set(point.seq)
    current().audit_checkpoint_time.set(point.ts)


@_never_raises
def observe_maintenance(marks: dict[str, float], backups_expected: bool = False) -> None:
    """Publish when each maintenance task (backup, retention) last ran to the end, as the store says,
    and, beside it, whether backups are expected: a deployment without any is then told."""
    for task, when in marks.items():
        current().maintenance_time.labels(task).set(when)
    current().backups_expected.set(1 if backups_expected else 0)


@_never_raises
def set_gauge(key: str, value: float | None, **labels: Any) -> None:
    """Publish a monitoring figure (a key of ``MONITORING_GAUGES``); ``None`` publishes NaN."""
    current().set_gauge(key, value, **labels)


def outcome_for(status: int) -> str:
    """Return the ``outcome`` label for an HTTP status: ok, invalid (4xx) or error (5xx)."""
    return "ok" if status < 400 else "invalid" if status < 500 else "error"


def render() -> tuple[bytes, str]:
    """Return the exposition text for every worker (or this process) and its content type."""
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    try:
        current().sample_process()
    except Exception:
        warn_once("process sample")
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(current().registry), CONTENT_TYPE_PLAIN_0_0_4
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    for _ in range(SCRAPE_ATTEMPTS - 1):
        try:
            return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
        except FileNotFoundError:
            continue  # the master merged a dead worker's file between listing the folder and reading it
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
