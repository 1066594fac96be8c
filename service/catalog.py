"""The models one worker serves: verified, loaded versions and where each label points.

A ``Catalog`` scans the artifact root, loads every version it has not seen (verifying
before unpickling), and re-reads each ``registry.json``. It publishes the result as one
immutable snapshot swapped in a single assignment, so a request that resolved a version keeps
it to the end while the next request sees the new state. A version that fails to load is
reported (status FAILED with the reason, and a log line) and never replaces one that works.
No Flask.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from service import artifacts, registry, runtime
from service.errors import ArtifactError, LabelNotFound, ModelNotFound, ModelUnavailable, VersionNotFound

log = logging.getLogger(__name__)

AVAILABLE, LOADING, FAILED = "AVAILABLE", "LOADING", "FAILED"


@dataclass(frozen=True)
class VersionState:
    version: int
    status: str
    reason: str | None = None
    model: runtime.LoadedModel | None = None


@dataclass(frozen=True)
class ModelState:
    name: str
    versions: MappingProxyType  # int -> VersionState
    labels: MappingProxyType  # str -> int
    registry_error: str | None = None


@dataclass
class Catalog:
    root: Path
    signing_key: str | None = None
    poll_seconds: float = 2.0
    _models: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def refresh(self) -> None:
        """Bring the snapshot in line with the disk: load new versions first, then switch."""
        with self._lock:
            models = {}
            for name in artifacts.list_models(self.root):
                models[name] = self._refresh_model(name, self._models.get(name))
            self._models = MappingProxyType(models)

    def _refresh_model(self, name: str, old: ModelState | None) -> ModelState:
        versions = dict(old.versions) if old else {}
        on_disk = set(artifacts.list_versions(self.root, name))
        for number in sorted(on_disk - set(versions)):
            versions[number] = self._load(name, number)
        for gone in set(versions) - on_disk:
            del versions[gone]
        try:
            labels, error = registry.read_state(self.root, name)["labels"], None
        except ArtifactError as exc:
            labels, error = (dict(old.labels) if old else {}), str(exc)
            log.error("registry state unreadable; keeping the last good labels",
                      extra={"model": name, "reason": error})
        return ModelState(name, MappingProxyType(versions), MappingProxyType(dict(labels)), error)

    def _load(self, name: str, version: int) -> VersionState:
        folder = artifacts.version_dir(self.root, name, version)
        try:
            model = runtime.load(folder, name=name, version=version, signing_key=self.signing_key)
        except ArtifactError as exc:
            log.error("model version refused", extra={"model": name, "version": version, "reason": str(exc)})
            return VersionState(version, FAILED, str(exc))
        log.info("model version loaded", extra={"model": name, "version": version,
                                                 "load_seconds": round(model.load_seconds, 4)})
        return VersionState(version, AVAILABLE, None, model)

    def start_polling(self) -> threading.Thread:
        """Follow the disk from a daemon thread, so label changes need no restart."""
        thread = threading.Thread(target=self._poll, name="catalog-poll", daemon=True)
        thread.start()
        return thread

    def stop_polling(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a bad scan must not kill the thread that keeps us current
                log.exception("catalog refresh failed; serving the previous state")

    # -- reading -----------------------------------------------------------------------------

    def model(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None:
            raise ModelNotFound(details={"model": name})
        return state

    def models(self) -> list[ModelState]:
        return list(self._models.values())

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> runtime.LoadedModel:
        """Return the loaded model a request should use: a pinned version, a label, or ``production``."""
        state = self.model(name)
        if version is None:
            label = label or registry.PRODUCTION
            if label not in state.labels:
                raise LabelNotFound(f"Model {name!r} has no label {label!r}.", details={"model": name, "label": label})
            version = state.labels[label]
        entry = state.versions.get(version)
        if entry is None:
            raise VersionNotFound(details={"model": name, "version": version})
        if entry.status != AVAILABLE:
            raise ModelUnavailable(f"Version {version} of {name!r} is {entry.status}.",
                                   details={"model": name, "version": version, "status": entry.status})
        return entry.model

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when some model has a ``production`` label and every such version is loaded."""
        report: dict[str, Any] = {}
        for state in self._models.values():
            version = state.labels.get(registry.PRODUCTION)
            if version is not None:
                entry = state.versions.get(version)
                report[state.name] = {"production": version, "status": entry.status if entry else "MISSING"}
        ready = bool(report) and all(r["status"] == AVAILABLE for r in report.values())
        return ready, report
