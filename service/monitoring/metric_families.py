"""What the server counts: every metric family, its name, help and buckets, and the bounds on its labels.

Every series is named ``sklearn_server_*`` in base units (``_seconds``, ``_total`` for
counters, ``_info`` for the model-info gauge). Labels only take values from bounded sets:
``route`` is the URL rule (never the raw path; ``<unmatched>`` for 404/405), ``model`` and
``version`` only for models and versions this process has seen on disk (``observe_model_loaded``
/ ``observe_load_failure``), so a request for an unknown model creates no series; free-form
values are tokens, at most ``MAX_VALUES_PER_LABEL`` per label.

The latency objective: 99 % of requests answered within ``LATENCY_OBJECTIVE_SECONDS``
(250 ms), a bucket boundary of the latency histogram; ``deploy/prometheus/alerts.yml`` alerts
on it.

``Metrics`` may raise on a bad observation; the process-wide instance, the never-raising
functions the service calls and the scrape are ``service.monitoring.metrics``'s. No Flask,
no multiprocess files.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "sklearn_server_"
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
MAX_HTTP_CHILDREN = 1024  # (route, method, status) triples whose metric children a worker keeps at hand
MAX_CHILDREN = 4096  # other metric children a worker keeps at hand (their label values are bounded anyway)
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

#: Whether ``feature`` labels carry feature names (METRICS_FEATURE_LABELS); one flag per process,
#: set once by ``use_feature_names`` when the app starts. Names by default outside an app.
FEATURE_LABELS = [True]


def use_feature_names(enabled: bool) -> None:
    """Name features in labels (True) or number them by their position in the manifest (False)."""
    FEATURE_LABELS[0] = bool(enabled)


class Metrics:
    """Every metric family the server exports, built once per process, with its label bounds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # In multiprocess mode values go to files and the scrape builds its own registry.
        self.registry = registry
        #: (route, method, status) -> the request counter's and duration histogram's children, so a
        #: request's observation skips prometheus-client's label checks and lock
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        #: (metric, label values) -> child, for the per-answer observations (values bounded by ``known``)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
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
                                       "Request and prediction records lost (the predictions themselves were "
                                       "answered), by reason: queue_full (the worker's in-memory queue), spool_full "
                                       "(SPOOL_MAX_BYTES reached while the store failed), spool_unwritable (the "
                                       "spool's disk refused), unreadable, encoding_failed, torn (the rest of a "
                                       "spool segment damaged by a crash mid-write: one per segment).",
                                       ("reason",), **reg)
        self.store_write_failures = Counter(PREFIX + "store_write_failures",
                                            "Writes to the store that failed, by table and reason (locked, full, "
                                            "read_only, unreachable, other). Records whose write failed wait in the "
                                            "spool and are retried.", ("table", "reason"), **reg)
        self.spool_bytes = Gauge(PREFIX + "spool_bytes", "Bytes of answered records waiting in the workers' spools "
                                 "for the store.", multiprocess_mode="livesum", **reg)
        self.spool_oldest = Gauge(PREFIX + "spool_oldest_seconds", "Age of the oldest record waiting in a worker's "
                                  "spool (0 when the store has everything).", multiprocess_mode="livemax", **reg)
        self.rate_limited = Counter(PREFIX + "rate_limited", "Requests refused with 429, by the limit they exceeded "
                                    "(requests or rows per second).", ("limit",), **reg)
        self.rate_limit_unavailable = Counter(PREFIX + "rate_limit_unavailable",
                                              "Rate-limit checks skipped, the request let through, because the "
                                              "shared counters could not be created, mapped or locked.", **reg)
        self.log_rows_deleted = Counter(PREFIX + "prediction_log_rows_deleted",
                                        "Logged predictions deleted by the retention job, by reason (age: past "
                                        "RETENTION_DAYS; cap: over PREDICTION_LOG_MAX_ROWS).", ("reason",), **reg)
        # mostrecent, not max: checkpoints only grow, so the newest write is the largest, and a dead
        # worker's mostrecent file is merged into the archive (multiproc.MERGED_KINDS) where a max
        # file would be left behind, one per worker ever started
        self.audit_checkpoint_seq = Gauge(PREFIX + "audit_checkpoint_seq", "Audit records anchored by the newest "
                                          "signed checkpoint (AUDIT_CHECKPOINT_FILE).", multiprocess_mode="mostrecent",
                                          **reg)
        self.audit_checkpoint_time = Gauge(PREFIX + "audit_checkpoint_timestamp_seconds", "When the newest audit "
                                           "checkpoint was signed (its age: time() minus this).",
                                           multiprocess_mode="mostrecent", **reg)
        self.maintenance_time = Gauge(PREFIX + "maintenance_last_run_timestamp_seconds", "When each maintenance "
                                      "task last ran to the end, in any process (backup: `python -m service backup`; "
                                      "retention: the age purge); its age: time() minus this.", ("task",),
                                      multiprocess_mode="mostrecent", **reg)
        self.backups_expected = Gauge(PREFIX + "backups_expected", "1 when BACKUPS_EXPECTED is set: backups run on "
                                      "a schedule, so a deployment with no finished backup on record is alerted on.",
                                      multiprocess_mode="mostrecent", **reg)
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

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept at hand: an answer's observations skip the label checks and lock."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values)
            if len(self._children) < MAX_CHILDREN:
                self._children[key] = child
        return child

    def _remember(self, model: str, version: str, features: frozenset[str]) -> None:
        with self._lock:
            versions = dict(self._features.get(model, {}))
            versions[version] = features
            self._features[model] = versions

    def _feature_label(self, model: str, version: str, feature: str) -> str:
        """The feature's name with ``FEATURE_LABELS``, else its position in the manifest (``feature_3``):
        /metrics may be open (no keys, or METRICS_REQUIRE_KEY=0), and feature names are part of what
        /v1/models keeps behind a key."""
        if FEATURE_LABELS[0] or feature == PREDICTION_FEATURE:
            return feature
        return f"feature_{self._feature_positions.get((model, version), {}).get(feature, 'unknown')}"

    # -- observations ----------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, started: float | None) -> None:
        children = self._http_children.get((route, method, status))
        if children is None:
            label = method if method in METHODS else "other"
            children = (self.http_requests.labels(route, label, str(int(status))), self.http_duration.labels(route, label))
            if len(self._http_children) < MAX_HTTP_CHILDREN:  # methods come from clients: bounded
                self._http_children[(route, method, status)] = children
        children[0].inc()
        if started is not None:
            children[1].observe(time.perf_counter() - started)

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
        self._child(self.prediction_requests, model, label, outcome).inc()
        if outcome == "ok":
            self._child(self.predictions, model, label).inc(rows)
            self._child(self.batch_rows, model).observe(rows)
            if seconds is not None:
                self._child(self.prediction_duration, model, label).observe(seconds)

    def observe_protocol(self, model: str, protocol: str, outcome: str) -> None:
        if protocol not in PROTOCOLS or outcome not in OUTCOMES:
            raise ValueError(f"unknown protocol {protocol!r} or outcome {outcome!r}")
        if self.known(model):
            self._child(self.protocol_requests, model, protocol, outcome).inc()

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
