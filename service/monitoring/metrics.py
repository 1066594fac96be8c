"""Prometheus metrics: what the server counts, with bounded labels, correct across workers.

Every series is named ``sklearn_server_*`` in base units (``_seconds``, ``_total`` for
counters, ``_info`` for the model-info gauge). Labels only take values from bounded sets:
``route`` is the URL rule (never the raw path; ``<unmatched>`` for 404/405), ``model`` and
``version`` only for models and versions this process has seen on disk (``observe_model_loaded``
/ ``observe_load_failure``), so a request for an unknown model creates no series.

Under Gunicorn the values live in prometheus-client's multiprocess files (where, when they are
emptied, how a full disk and dead workers are survived: ``service.monitoring.multiproc``);
every scrape reads them into a fresh registry. Without ``PROMETHEUS_MULTIPROC_DIR`` (unit
tests, waitress, a REPL) the same functions work in a single process. Each worker publishes
its own CPU seconds, memory and open fds with a ``pid`` label. The metric objects are built on
first use, so importing this module does nothing, and no observation ever raises into a
request (a failed one is counted). No Flask: the request hooks and ``GET /metrics`` live in
``service.api.metrics``.

The latency objective: 99 % of requests answered within ``LATENCY_OBJECTIVE_SECONDS``
(250 ms), a bucket boundary of the latency histogram; ``deploy/prometheus/alerts.yml`` alerts
on it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

from service.monitoring import multiproc
from service.monitoring.multiproc import MULTIPROC_ENV, multiprocess_dir  # noqa: F401  (part of this API)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "sklearn_server_"
#: Reads of the metrics folder per scrape before a file that vanished mid-read is an error.
SCRAPE_ATTEMPTS = 3
#: Seconds between two samples of a worker's CPU, memory and file descriptors.
PROCESS_SAMPLE_SECONDS = 1.0
#: prometheus-client's process figures (family name) -> our per-worker gauge key.
PROCESS_FIGURES = {"process_cpu_seconds": "cpu", "process_resident_memory_bytes": "rss", "process_open_fds": "fds"}
#: p99 of request latency we promise; one of ``LATENCY_BUCKETS`` so the histogram can tell.
LATENCY_OBJECTIVE_SECONDS = 0.25
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
UNMATCHED_ROUTE = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: ``outcome`` of a prediction request: answered, refused (4xx) or failed (5xx).
OUTCOMES = ("ok", "invalid", "error")
#: The wire protocols a predict request can arrive by (service/protocols).
PROTOCOLS = ("v1", "v2", "mlflow")
#: Error codes that mean "the input was wrong" (``observe_validation_failure``'s reasons).
VALIDATION_CODES = frozenset({"validation_failed", "invalid_json", "unsupported_media_type", "payload_too_large",
                              "bad_request"})
FALLBACK_REASONS = ("error", "timeout")
QUALITY_CHECKS = ("missing", "out_of_range", "unseen")
#: ``feature`` label value for the model's output in drift and quality gauges.
PREDICTION_FEATURE = "__prediction__"
#: Free-form label values (error codes, statistics, rule names) must look like this, and each
#: such label takes at most ``MAX_VALUES_PER_LABEL`` distinct values per process.
TOKEN_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_VALUES_PER_LABEL = 64
#: Monitoring figures published with ``set_gauge``: key -> (metric name, help, labels).
#: Labels named model/version/feature are checked against the models seen on disk; the others
#: are tokens. They use the ``mostrecent`` mode: a figure describes the shared prediction log,
#: not the worker that computed it, so the newest value wins whichever process wrote it.
MONITORING_GAUGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "drift_score": (PREFIX + "drift_score",
                    "Drift statistic of a feature against the reference profile (statistic: psi, ks, chi2, ...).",
                    ("model", "version", "feature", "statistic")),
    "data_quality_ratio": (PREFIX + "data_quality_ratio",
                           "Share of the window's rows with a data-quality problem (check: missing, out_of_range, ...).",
                           ("model", "version", "feature", "check")),
    "live_metric": (PREFIX + "live_metric",
                    "Live performance from feedback over the window (metric: accuracy, f1, rmse, ...).",
                    ("model", "version", "metric")),
    "bias_gap": (PREFIX + "bias_gap",
                 "Largest gap between groups of a sensitive feature (metric: demographic_parity_difference, ...).",
                 ("model", "version", "feature", "metric")),
    "window_predictions": (PREFIX + "monitoring_window_predictions",
                           "Predictions in the monitoring window the other figures were computed on.",
                           ("model", "version")),
    "alert_state": (PREFIX + "alert_state",
                    "Monitoring alert rule state: -1 insufficient, 0 ok, 1 pending, 2 warn, 3 firing.",
                    ("model", "version", "rule")),
}

log = logging.getLogger(__name__)

P = ParamSpec("P")

#: Whether ``feature`` labels carry feature names (METRICS_FEATURE_LABELS); one flag per process,
#: set once by ``use_feature_names`` when the app starts. Names by default outside an app.
FEATURE_LABELS = [True]


def use_feature_names(enabled: bool) -> None:
    """Name features in labels (True) or number them by their position in the manifest (False)."""
    FEATURE_LABELS[0] = bool(enabled)


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


# -- the metric families ------------------------------------------------------------------------


class Metrics:
    """Every metric family the server exports, built once per process, with its label bounds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # In multiprocess mode values go to files and the scrape builds its own registry.
        self.registry = registry
        reg = {"registry": registry}
        # First, so its file exists (allocated) before any other: counting a failure needs no new space.
        self.write_failures = Counter(PREFIX + "metric_write_failures",
                                      "Observations this server could not record (e.g. the metrics folder is full).",
                                      **reg)
        self.process = {
            "cpu": Gauge(PREFIX + "worker_cpu_seconds", "CPU time (user and system) used by the worker process.",
                         multiprocess_mode="liveall", **reg),
            "rss": Gauge(PREFIX + "worker_resident_memory_bytes", "Resident memory of the worker process.",
                         multiprocess_mode="liveall", **reg),
            "fds": Gauge(PREFIX + "worker_open_fds", "Open file descriptors of the worker process.",
                         multiprocess_mode="liveall", **reg),
        }
        self._sampled = float("-inf")
        self.http_requests = Counter(PREFIX + "http_requests", "HTTP requests answered, by URL rule, method and status.",
                                     ("route", "method", "status"), **reg)
        self.http_duration = Histogram(PREFIX + "http_request_duration_seconds",
                                       "Time to answer an HTTP request in the app, by URL rule and method.",
                                       ("route", "method"), buckets=LATENCY_BUCKETS, **reg)
        self.http_in_progress = Gauge(PREFIX + "http_requests_in_progress", "HTTP requests being answered now.",
                                      multiprocess_mode="livesum", **reg)
        self.prediction_requests = Counter(PREFIX + "prediction_requests",
                                           "Predict requests by model, version and outcome (ok, invalid, error).",
                                           ("model", "version", "outcome"), **reg)
        self.predictions = Counter(PREFIX + "predictions", "Rows predicted (one prediction per input row).",
                                   ("model", "version"), **reg)
        self.prediction_duration = Histogram(PREFIX + "prediction_duration_seconds",
                                             "Time to validate and predict one batch, by model and version.",
                                             ("model", "version"), buckets=LATENCY_BUCKETS, **reg)
        self.batch_rows = Histogram(PREFIX + "prediction_batch_rows", "Rows per answered predict request.",
                                    ("model",), buckets=BATCH_BUCKETS, **reg)
        self.validation_failures = Counter(PREFIX + "validation_failures",
                                           "Predict requests refused for their input, by model and error code.",
                                           ("model", "code"), **reg)
        self.model_info = Gauge(PREFIX + "model_info",
                                "Model versions loaded (1) by a live worker: artifact sha256 and training scikit-learn.",
                                ("model", "version", "sha256", "sklearn_version"), multiprocess_mode="livemax", **reg)
        self.load_failures = Counter(PREFIX + "model_load_failures", "Model versions refused at load, by model and version.",
                                     ("model", "version"), **reg)
        self.quality_issues = Counter(PREFIX + "data_quality_issues",
                                      "Input values with a data-quality problem at request time, by check "
                                      "(missing, out_of_range against the training range, unseen category).",
                                      ("model", "version", "check"), **reg)
        self.fallbacks = Counter(PREFIX + "fallbacks", "Predictions answered by the fallback version instead of the chosen one.",
                                 ("model", "from_version", "to_version", "reason"), **reg)
        self.protocol_requests = Counter(PREFIX + "protocol_requests",
                                         "Predict requests by model, wire protocol (v1, v2, mlflow) and outcome.",
                                         ("model", "protocol", "outcome"), **reg)
        self.records_dropped = Counter(PREFIX + "records_dropped",
                                       "Request and prediction records dropped because the worker's recording "
                                       "queue was full (the predictions themselves were answered).", **reg)
        self.gauges = {key: Gauge(name, doc, labels, multiprocess_mode="mostrecent", **reg)
                       for key, (name, doc, labels) in MONITORING_GAUGES.items()}
        self._lock = threading.Lock()
        self._features: dict[str, dict[str, frozenset[str]]] = {}  # model -> version -> feature names
        self._info_labels: dict[tuple[str, str], tuple[str, str]] = {}
        self._feature_positions: dict[tuple[str, str], dict[str, int]] = {}
        self._tokens: dict[tuple[str, str], set[str]] = {}

    # -- bounds --------------------------------------------------------------------------------

    def known(self, model: str, version: Any = None) -> bool:
        """Tell whether ``model`` (and ``version``, when given) exist on disk for this process."""
        versions = self._features.get(model)
        return versions is not None and (version is None or str(version) in versions)

    def _token(self, metric: str, label: str, value: Any) -> str | None:
        """Return ``value`` when it may become a label value, within the per-label cap."""
        value = str(value)
        if not TOKEN_RE.fullmatch(value):
            return None
        seen = self._tokens.setdefault((metric, label), set())
        if value not in seen:
            with self._lock:
                if len(seen) >= MAX_VALUES_PER_LABEL:
                    return None
                seen.add(value)
        return value

    def _remember(self, model: str, version: str, features: frozenset[str]) -> None:
        with self._lock:
            versions = dict(self._features.get(model, {}))
            versions[version] = features
            self._features[model] = versions

    def _feature_label(self, model: str, version: str, feature: str) -> str:
        """The feature's name with ``FEATURE_LABELS``, else its position in the manifest (``feature_3``):
        /metrics needs no key, and feature names are part of what /v1/models keeps behind one."""
        if FEATURE_LABELS[0] or feature == PREDICTION_FEATURE:
            return feature
        return f"feature_{self._feature_positions.get((model, version), {}).get(feature, 'unknown')}"

    # -- observations ----------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, started: float | None) -> None:
        method = method if method in METHODS else "other"
        self.http_requests.labels(route, method, str(int(status))).inc()
        if started is not None:
            self.http_duration.labels(route, method).observe(time.perf_counter() - started)

    def observe_model_loaded(self, model: str, version: int, manifest: Mapping[str, Any]) -> None:
        names = [f["name"] for f in manifest.get("input", {}).get("features", ())]
        self._feature_positions[(model, str(version))] = {name: i for i, name in enumerate(names)}
        self._remember(model, str(version), frozenset(names) | {PREDICTION_FEATURE})
        model_file = manifest.get("model_file", "")
        sha256 = str(manifest.get("files", {}).get(model_file, {}).get("sha256", ""))
        sklearn_version = str(manifest.get("libraries", {}).get("scikit-learn", ""))
        self._info_labels[(model, str(version))] = (sha256, sklearn_version)
        self.model_info.labels(model, str(version), sha256, sklearn_version).set(1)

    def observe_model_removed(self, model: str, version: int) -> None:
        labels = self._info_labels.pop((model, str(version)), None)
        if labels is not None:
            self.model_info.labels(model, str(version), *labels).set(0)

    def observe_load_failure(self, model: str, version: int) -> None:
        if not self.known(model, version):
            self._remember(model, str(version), frozenset({PREDICTION_FEATURE}))
        self.load_failures.labels(model, str(version)).inc()

    def observe_prediction(self, model: str, version: int | None, outcome: str, rows: int = 0,
                           seconds: float | None = None) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        if not self.known(model) or (version is not None and not self.known(model, version)):
            return  # a 404 for a name or version that does not exist: no series for it
        label = "" if version is None else str(version)
        self.prediction_requests.labels(model, label, outcome).inc()
        if outcome == "ok":
            self.predictions.labels(model, label).inc(rows)
            self.batch_rows.labels(model).observe(rows)
            if seconds is not None:
                self.prediction_duration.labels(model, label).observe(seconds)

    def observe_protocol(self, model: str, protocol: str, outcome: str) -> None:
        if protocol not in PROTOCOLS or outcome not in OUTCOMES:
            raise ValueError(f"unknown protocol {protocol!r} or outcome {outcome!r}")
        if self.known(model):
            self.protocol_requests.labels(model, protocol, outcome).inc()

    def observe_validation_failure(self, model: str, code: str) -> None:
        if not self.known(model):
            return
        token = self._token("validation_failures", "code", code)
        if token is None:
            raise ValueError(f"unusable error code {code!r}")
        self.validation_failures.labels(model, token).inc()

    def observe_data_quality(self, model: str, version: int, counts: Mapping[str, int]) -> None:
        if not self.known(model, version):
            return
        for check in QUALITY_CHECKS:
            if counts.get(check):
                self.quality_issues.labels(model, str(version), check).inc(counts[check])

    def observe_fallback(self, model: str, from_version: int, to_version: int, reason: str = "error") -> None:
        if not (self.known(model, from_version) and self.known(model, to_version)):
            return
        reason = reason if reason in FALLBACK_REASONS else "other"
        self.fallbacks.labels(model, str(from_version), str(to_version), reason).inc()

    def sample_process(self, force: bool = False) -> None:
        """Publish this worker's CPU seconds, resident memory and open fds, at most once per PROCESS_SAMPLE_SECONDS.

        prometheus-client's ``ProcessCollector`` reads them from /proc but describes only the
        process that is scraped; copied into ``liveall`` gauges, every live worker shows up
        with its ``pid`` label.
        """
        now = time.monotonic()
        if not force and now - self._sampled < PROCESS_SAMPLE_SECONDS:
            return
        self._sampled = now
        from prometheus_client.process_collector import ProcessCollector

        for family in ProcessCollector(registry=None).collect():
            key = PROCESS_FIGURES.get(family.name)
            if key is not None and family.samples:
                self.process[key].set(family.samples[0].value)

    def set_gauge(self, key: str, value: float, **labels: Any) -> None:
        name, _, names = MONITORING_GAUGES[key]
        if set(labels) != set(names):
            raise ValueError(f"{key} takes labels {', '.join(names)}, got {', '.join(sorted(labels))}")
        model, version = str(labels["model"]), labels.get("version")
        if not self.known(model) or (version not in (None, "") and not self.known(model, version)):
            return
        values = []
        for label in names:
            raw = labels[label]
            if label == "model":
                values.append(model)
            elif label == "version":
                values.append("" if raw is None else str(raw))
            elif label == "feature":
                if version in (None, "") or str(raw) not in self._features[model].get(str(version), ()):
                    raise ValueError(f"{raw!r} is not a feature of {model} version {version}")
                values.append(self._feature_label(model, str(version), str(raw)))
            else:
                token = self._token(name, label, raw)
                if token is None:
                    raise ValueError(f"label {label}={raw!r} is not a token or exceeds {MAX_VALUES_PER_LABEL} values")
                values.append(token)
        self.gauges[key].labels(*values).set(float("nan") if value is None else float(value))


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
    except Exception:  # noqa: S110  counting the failure must not be a second one
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
def observe_record_dropped(count: int = 1) -> None:
    """Count records the recording queue had no room for."""
    current().records_dropped.inc(count)


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
