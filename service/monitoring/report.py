"""The monitoring report of a model: per version traffic, drift, quality, live performance, bias.

One place composes the pure maths modules over what the store recorded, so the HTTP API, the
page, the CLI report and the alert rules all read the same figures. A report over a large
window reads up to ``MAX_WINDOW`` predictions per version, so each worker keeps such a report
for ``cache_seconds`` per (model, window); parallel callers of any one report wait for one
computation (``ReportCache``) rather than each read the log again; and with
``large_reports``, at most that many large reports are computed at once across the workers
(``WorkSlots``): the next caller gets 503 with Retry-After at once instead of tying up one more
worker. Reports over the default window stay fresh (feedback shows at once) and cheap: they
read ``MONITORING_WINDOW`` rows. Whatever the window, a version's figures are computed again
only when its window changed (``Monitoring.window_sections``): the alert loop asks for the same
ones every ``ALERT_SECONDS``. No Flask.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from service.errors import MonitoringBusy
from service.models import comparison
from service.monitoring import log_window, metrics
from service.monitoring.bias import bias_report
from service.monitoring.drift import drift_report
from service.monitoring.multiproc import multiprocess_dir
from service.monitoring.performance import live_performance, outcomes, timeline
from service.monitoring.predlog import PredictionLog
from service.monitoring.quality import window_quality
from service.security.quota import WorkSlots
from service.serving.catalog import Catalog, ModelState
from service.serving.runtime import LoadedModel
from service.store import traffic

#: Most logged predictions one monitoring report reads (the API's and the page's ``window``).
#: Kept at 100,000 (the documented range): a cold report of that size took 1.6 s of one worker on
#: a 3 M-row log (python -m bench.big_log); the cache, ``large_reports`` and the per-key request
#: rate bound what callers can make the server do, where a lower cap would only shorten each call.
MAX_WINDOW = 100_000
#: Name of the file whose byte-range locks are the large-report slots, in the metrics folder.
SLOTS_FILE = "monitoring-reports-v1.lock"
TRAFFIC_SECONDS = 3600  # traffic figures cover the last hour
TIMELINE_BUCKET_SECONDS = 60
#: Windows whose last figures a worker keeps (per model version and window size), oldest dropped first.
MAX_KEPT_WINDOWS = 64
TRAFFIC_KEYS = ("requests", "errors", "error_rate", "client_errors", "p50_ms", "p95_ms", "p99_ms", "mean_ms",
                "fallbacks_from", "fallbacks_to", "latency_sample")


class ReportCache:
    """Values kept ``ttl`` seconds per key, computed once however many threads ask at the same time.

    The first caller of a missing or stale key computes it; the others wait for that result
    (or its exception) instead of repeating the work. Errors are not kept. At most
    ``max_entries`` keys are held, the oldest going first, so callers who vary the window
    cannot make a worker hold more than a few dozen reports.
    """

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 32) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[Hashable, tuple[float, Any]] = {}  # key -> (computed at, value)
        self._flights: dict[Hashable, _Flight] = {}

    def get(self, key: Hashable, compute: Callable[[], Any], *, keep: bool = True) -> Any:
        """Return the fresh value for ``key``, computing it (once across threads) when there is none.

        With ``keep`` False the value is shared only with callers that arrive while it is computed.
        """
        with self._lock:
            kept = self._values.get(key)
            if kept is not None and self._clock() - kept[0] < self.ttl:
                return kept[1]
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if not leader:
            return flight.result()
        try:
            flight.value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            if not keep or self.ttl <= 0:
                return flight.value
            with self._lock:
                self._values[key] = (self._clock(), flight.value)
                while len(self._values) > self.max_entries:
                    del self._values[next(iter(self._values))]
            return flight.value
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


@dataclass
class _Flight:
    """One computation in progress that other callers wait on."""

    done: threading.Event = field(default_factory=threading.Event)
    waiters: int = 0  # callers waiting on it, besides the one computing
    value: Any = None
    error: BaseException | None = None

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass
class Monitoring:
    """Builds reports on demand from the shared store; ``alerts`` supplies active alerts.

    With ``cache_seconds``, ``model_report`` answers a report over more than ``default_window``
    predictions, or over minutes, from this worker's cache for that long.
    """

    catalog: Catalog
    log: PredictionLog
    default_window: int
    alerts: Any = None  # an AlertManager, when alerting is on
    cache_seconds: float = 0.0
    large_reports: int = 0  # large reports computed at once across workers; 0 = no limit
    cache: ReportCache = field(init=False)
    slots: WorkSlots | None = field(init=False, default=None)
    _last_seconds: float = field(init=False, default=1.0)  # the last large report's time: the Retry-After
    _windows: dict[Hashable, _KeptWindow] = field(init=False, default_factory=dict)
    _windows_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.cache = ReportCache(self.cache_seconds)
        if self.large_reports:
            folder = multiprocess_dir()  # shared by the workers of one server; None: this process only
            self.slots = WorkSlots(folder / SLOTS_FILE if folder is not None else None, self.large_reports)

    def model_report(self, name: str, window: int | None = None, minutes: float | None = None) -> dict[str, Any]:
        """Report every version in play of model ``name`` over its last ``window`` predictions.

        With ``minutes``, the window is every prediction of the last ``minutes`` instead. Such a
        report, or one over more than ``default_window`` predictions, may be ``cache_seconds`` old.
        """
        self.catalog.model(name)  # 404 for an unknown model, never cached
        last_n = window or self.default_window
        key = (name, None, minutes) if minutes else (name, last_n, None)
        large = bool(minutes) or last_n > self.default_window
        compute = (lambda: self._in_a_slot(name, window, minutes)) if large else \
            (lambda: self.fresh_report(name, window, minutes))
        return self.cache.get(key, compute, keep=large)

    def _in_a_slot(self, name: str, window: int | None, minutes: float | None) -> dict[str, Any]:
        """Compute a large report if a slot is free; 503 (``MonitoringBusy``) at once otherwise."""
        if self.slots is None:
            return self.fresh_report(name, window, minutes)
        slot = self.slots.try_acquire()
        if slot is None:
            raise MonitoringBusy(details={"model": name, "large_reports": self.large_reports},
                                 retry_after=math.ceil(self._last_seconds))
        started = time.monotonic()
        try:
            return self.fresh_report(name, window, minutes)
        finally:
            self._last_seconds = time.monotonic() - started
            self.slots.release(slot)

    def fresh_report(self, name: str, window: int | None = None, minutes: float | None = None) -> dict[str, Any]:
        """Compute ``model_report`` from the store now, bypassing the cache."""
        state = self.catalog.model(name)
        now = time.time()
        last_n = None if minutes else (window or self.default_window)
        since = now - minutes * 60 if minutes else None
        # Counted in the database, latencies from the newest requests: bounded however busy the hour.
        requests = self.log.store.traffic(name, now - TRAFFIC_SECONDS, comparison.MAX_TRAFFIC_ROWS,
                                          bucket_seconds=TIMELINE_BUCKET_SECONDS)
        figures = comparison.window_figures(requests)
        versions = {}
        for version in versions_in_play(state, figures):
            model = state.available(version)
            if model is not None:
                versions[str(version)] = self.version_report(model, last_n, figures.get(version),
                                                             traffic_timeline(requests, version), since)
        return {
            "model": name,
            "window": {"last_n": last_n, "since": _iso(since) if since else None, "traffic_seconds": TRAFFIC_SECONDS,
                       "until": _iso(now)},
            "labels": dict(state.labels),
            "rollout": {k: v for k, v in state.rollout.items() if k != "rules"},
            "versions": versions,
            "alerts": self.alerts.active(name) if self.alerts is not None else [],
        }

    def version_section(self, name: str, version: int, since: float) -> dict[str, Any] | None:
        """One version's drift, quality, performance and bias (no traffic) from the predictions
        logged since ``since``, or None when this worker has not loaded it."""
        model = self.catalog.model(name).available(version)
        return None if model is None else self.version_report(model, None, None, [], since)

    def overview(self, window: int | None = None) -> list[dict[str, Any]]:
        return [self.model_report(state.name, window) for state in self.catalog.models()]

    def version_report(self, model: LoadedModel, last_n: int | None, figures: dict[str, Any] | None,
                       requests_timeline: list[dict[str, Any]], since: float | None = None) -> dict[str, Any]:
        """Compute one version's sections from its last ``last_n`` logged predictions (or those since
        ``since``); ``figures`` and ``requests_timeline`` (``traffic_timeline``) make its traffic section."""
        sections = self.window_sections(model, last_n, since)
        return {"n": sections.pop("n"), "traffic": traffic_section(figures, requests_timeline), **sections}

    def window_sections(self, model: LoadedModel, last_n: int | None, since: float | None) -> dict[str, Any]:
        """A version's window figures (n, drift, quality, performance, bias), computed again only when
        the window changed: new, erased or purged records, or new labels.

        The alert loop evaluates every ``ALERT_SECONDS``; an idle model's window costs it the index
        and label reads. The records of a window of at most ``default_window`` rows are also kept
        decoded between two evaluations, so a busy model's costs it the new records' decoding.
        """
        key = (model.name, model.version, last_n, since is None)
        kept = self._windows.get(key)
        if kept is not None and kept.model() is not model:  # another load of that version: its own figures
            kept = None
        small = since is None and last_n is not None and last_n <= self.default_window
        decoded = dict(kept.decoded) if kept is not None and small else {} if small else None
        loaded = log_window.load(self.log.store, model.name, model.version, last_n=last_n, since=since,
                                 decoded=decoded)
        content = loaded.content
        if kept is not None and kept.content == content:
            return dict(kept.sections)
        sections = window_figures(model, log_window.assemble(loaded, model.features))
        with self._windows_lock:
            self._windows.pop(key, None)
            self._windows[key] = _KeptWindow(weakref.ref(model), content, decoded or {}, sections)
            while len(self._windows) > MAX_KEPT_WINDOWS:
                del self._windows[next(iter(self._windows))]
        return dict(sections)

    def reports(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """Yield (model, version, report) for every version in play, for the alert rules.

        Publishes each version's figures as Prometheus gauges on the way, so a scrape sees what
        the last evaluation saw.
        """
        for state in self.catalog.models():
            report = self.model_report(state.name)
            for version, section in report["versions"].items():
                publish_gauges(state.name, int(version), section)
                yield state.name, int(version), section


def window_figures(model: LoadedModel, data: log_window.Window) -> dict[str, Any]:
    """Drift, quality, live performance and bias of one version over a window of its predictions."""
    manifest = model.manifest
    task, classes = manifest["task"], manifest["output"].get("classes")
    features = [f for f in model.features if f["name"] not in data.redacted]
    profile = manifest.get("reference_profile", {})
    reference_metrics = manifest.get("metrics", {}).get("holdout", {})
    performance = live_performance(task, classes, data.predictions, data.labels, data.probabilities,
                                   reference_metrics)
    performance["timeline"] = timeline(data.ts, outcomes(task, classes, data.predictions, data.labels))
    performance["timeline_metric"] = "mae" if task == "regression" else "accuracy"
    return {
        "n": data.n,
        "drift": drift_report(profile, features, data.columns, data.predictions, task),
        "quality": window_quality(profile, features, data.columns),
        "performance": performance,
        "bias": bias_report(features, data.columns, data.predictions, data.labels, task, classes),
    }


@dataclass
class _KeptWindow:
    """A window's last figures, what they were computed from, and its decoded records (small windows)."""

    model: weakref.ref[LoadedModel]  # never keeps an unloaded version (and its estimator) in memory
    content: tuple[Any, ...]
    decoded: dict[tuple[int, int], Any]
    sections: dict[str, Any]


def publish_gauges(model: str, version: int, section: dict[str, Any]) -> None:
    """Export one version's monitoring figures as gauges (drift, quality, live metrics, bias, window)."""
    metrics.set_gauge("window_predictions", section.get("n"), model=model, version=version)
    drift = section.get("drift", {})
    entries = dict(drift.get("features", {}))
    if drift.get("prediction"):
        entries[metrics.PREDICTION_FEATURE] = drift["prediction"]
    for feature, entry in entries.items():
        for statistic in ("psi", "ks_statistic", "chi2_statistic"):
            if entry.get(statistic) is not None:
                metrics.set_gauge("drift_score", entry[statistic], model=model, version=version, feature=feature,
                                  statistic=statistic.removesuffix("_statistic"))
    for feature, entry in section.get("quality", {}).get("features", {}).items():
        for check in metrics.QUALITY_CHECKS:
            if entry.get(f"{check}_rate") is not None:
                metrics.set_gauge("data_quality_ratio", entry[f"{check}_rate"], model=model, version=version,
                                  feature=feature, check=check)
    for name, value in section.get("performance", {}).get("metrics", {}).items():
        if isinstance(value, int | float):
            metrics.set_gauge("live_metric", value, model=model, version=version, metric=name)
    for feature, entry in section.get("bias", {}).get("features", {}).items():
        for gap in ("demographic_parity_difference", "equal_opportunity_difference"):
            if isinstance(entry.get(gap), int | float):
                metrics.set_gauge("bias_gap", entry[gap], model=model, version=version, feature=feature, metric=gap)


def versions_in_play(state: ModelState, figures: dict[int, Any]) -> list[int]:
    """Labelled, in-rollout and recently used versions, oldest first."""
    rollout = state.rollout
    wanted = set(state.labels.values()) | set(rollout.get("shadow") or ())
    if rollout.get("canary"):
        wanted.add(rollout["canary"]["version"])
    if rollout.get("fallback"):
        wanted.add(rollout["fallback"])
    wanted |= {v for v, f in figures.items() if f.get("requests")}
    return sorted(v for v in wanted if v in state.versions)


def traffic_section(figures: dict[str, Any] | None, requests_timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Request figures of one version, plus its per-minute timeline for the page."""
    figures = figures or {}
    section = {key: figures.get(key) for key in TRAFFIC_KEYS}
    section["requests"] = section["requests"] or 0
    served = (figures.get("requests") or 0)
    section["fallback_rate"] = (figures.get("fallbacks_from") or 0) / served if served else None
    section["timeline"] = requests_timeline
    return section


def traffic_timeline(window: traffic.Window, version: int) -> list[dict[str, Any]]:
    """Per-minute requests and server errors answered by ``version`` (exact), and their median latency.

    The median comes from the version's newest requests (``comparison.MAX_TRAFFIC_ROWS``): a minute
    older than those has ``p50_ms`` None rather than a median of the few of its requests read.
    """
    sample = window.samples.get(version, [])
    latencies: dict[int, list[float]] = {}
    for row in sample:
        if row["version"] == version:
            latencies.setdefault(int(row["ts"] // TIMELINE_BUCKET_SECONDS), []).append(float(row["latency_ms"]))
    # Every row newer than the oldest one read was read: minutes after its minute are whole.
    whole_after = int(sample[-1]["ts"] // TIMELINE_BUCKET_SECONDS) if sample and window.truncated(version) else None
    points = []
    for minute in window.minutes:
        if minute.version != version:
            continue
        values = latencies.get(minute.bucket) if whole_after is None or minute.bucket > whole_after else None
        points.append({"start": minute.bucket * TIMELINE_BUCKET_SECONDS, "end": (minute.bucket + 1) * TIMELINE_BUCKET_SECONDS,
                       "requests": minute.requests, "errors": minute.errors,
                       "p50_ms": float(np.percentile(values, 50)) if values else None})
    return points


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
