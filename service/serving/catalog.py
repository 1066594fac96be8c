"""The models one worker serves: verified, loaded versions and where each label points.

A ``Catalog`` scans the artifact root, loads every version it has not seen (verifying
before unpickling), and re-reads each ``registry.json``, falling back to its last-good copy
when it is unreadable (so a worker booted after the file broke serves what the others do).
With a ``verifier`` (the audit trail's anchors), a registry.json that does not match the last
audited change is refused the same way: the copy if it matches, else what this worker served. It
publishes the result as one immutable snapshot swapped in a single assignment, so a request
that resolved a version keeps it to the end while the next request sees the new state. A
version that fails to load is reported (status FAILED with the reason, and a log line) and
never replaces one that works. No Flask.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from service.errors import (
    ArtifactError,
    LabelNotFound,
    ModelNotFound,
    ModelUnavailable,
    RegistryStateUnavailable,
    RegistryUnreadable,
    VersionNotFound,
)
from service.models import artifacts, registry, registry_adopt
from service.models.rollout import choose_version, default_rollout
from service.periodic import Periodic
from service.serving import preload, runtime

log = logging.getLogger(__name__)

AVAILABLE, FAILED = "AVAILABLE", "FAILED"
REGISTRY_UNREADABLE = "REGISTRY_UNREADABLE"  # readiness status of a model whose state is not known at all
# where a model's labels and rollout came from: registry.json, its last-good copy, this
# worker's memory of an earlier read, or nowhere
FROM_FILE, FROM_LAST_GOOD, FROM_MEMORY, NO_STATE = "registry.json", "last-good", "memory", "none"
NO_ROLLOUT = default_rollout()


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
    labels: MappingProxyType  # str -> int, only versions this worker has AVAILABLE (or the last good ones)
    registry_error: str | None = None
    rollout: MappingProxyType = field(default_factory=lambda: MappingProxyType(dict(NO_ROLLOUT)))
    wanted: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # labels as registry.json says
    registry_source: str = FROM_FILE  # where labels and rollout came from; see readiness()
    registry_code: str | None = None  # why registry.json was not used: registry_unreadable|_unverified|_unchecked
    registry_verified: bool = True  # False: labels from a file the audit trail could not check (store down at boot)

    def available(self, version: int | None) -> runtime.LoadedModel | None:
        entry = self.versions.get(version) if version is not None else None
        return entry.model if entry is not None and entry.status == AVAILABLE else None

    @cached_property
    def widest(self) -> int:
        """The most features any loaded version takes (0 with none): what a body for this model is sized against.

        Worked out once per state: a state never changes, a new one replaces it.
        """
        return max((len(model.features) for v in self.versions if (model := self.available(v)) is not None), default=0)


@dataclass(frozen=True)
class Route:
    """Which loaded versions take part in answering one request."""

    model: runtime.LoadedModel
    role: str  # production | canary | pinned | label
    fallback: runtime.LoadedModel | None = None
    shadows: tuple[runtime.LoadedModel, ...] = ()
    budget_ms: float | None = None


_REFUSED = {registry.UNVERIFIED: "registry.json refused: it does not match the audit trail",
            registry.UNCHECKED: "registry.json changed and cannot be checked: the audit trail does not answer"}


def _fix(name: str, code: str | None, reason: str | None = None) -> str:
    """What the operator does about it, for the log line."""
    if code == registry.UNVERIFIED and registry_adopt.is_not_adopted(reason):  # made elsewhere, not edited
        return registry_adopt.adopt_fix(name)
    if code == registry.UNVERIFIED:
        return (f"python -m service registry check {name}; `registry restore {name}` undoes the edit, "
                f"`registry accept {name} --reason ...` keeps it")
    if code == registry.UNCHECKED:
        return "bring the database (DATABASE_URL) back; the file is checked on the next read"
    return f"python -m service registry restore {name}, or repair registry.json by hand"


def _ignore(*_args: Any) -> None:
    """The default listener: a catalog works without anyone watching it."""


@dataclass
class Catalog:
    """The models one worker serves; ``on_loaded``, ``on_load_failed`` and ``on_removed`` let
    the app count loads (metrics) without this module knowing who listens."""

    root: Path
    signing_key: str | None = None
    poll_seconds: float = 2.0
    on_loaded: Callable[[str, int, dict[str, Any]], None] = _ignore
    on_load_failed: Callable[[str, int], None] = _ignore
    on_removed: Callable[[str, int], None] = _ignore
    backend: Callable[[str], str] = runtime.BackendChoice()  # model name -> auto | joblib | onnx
    verifier: registry.Verifier | None = None  # checks registry.json against the audit trail; None: no check
    # work a version needs before it serves (measuring what an explanation costs): run as it loads, off any request
    prepare: Callable[[runtime.LoadedModel], None] = _ignore
    _models: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _poller: Periodic | None = None

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
            self.on_removed(name, gone)
        # a worker that has verified a state keeps it while nothing can be checked; one that has
        # not (booted during a database outage) serves the file unchecked rather than no label
        unchecked_ok = old is None or not old.registry_verified or old.registry_source == NO_STATE
        try:
            reading = registry.read_checked_state(self.root, name, self.verifier, unchecked_ok=unchecked_ok)
        except RegistryUnreadable as exc:
            return self._without_registry(name, versions, old, exc)
        state, error, code = reading.state, reading.error, reading.code
        source = FROM_LAST_GOOD if reading.from_last_good else FROM_FILE
        if error is not None and (old is None or old.registry_error != error):
            serving = "; serving its last-good copy" if reading.from_last_good else "; serving it unchecked"
            log.error(_REFUSED.get(code, "registry.json unreadable") + serving,
                      extra={"model": name, "reason": error, "fix": _fix(name, code, error)})
        elif error is None and old is not None and old.registry_error is not None:
            log.info("registry.json readable again", extra={"model": name})
        labels = self._servable_labels(name, state, versions, old)
        rollout = {**NO_ROLLOUT, **state.get("rollout", {})}
        return ModelState(name, MappingProxyType(versions), MappingProxyType(labels), error, MappingProxyType(rollout),
                          MappingProxyType(dict(state["labels"])), source, code, reading.verified)

    @staticmethod
    def _without_registry(name: str, versions: dict[int, VersionState], old: ModelState | None,
                          exc: RegistryUnreadable) -> ModelState:
        """Neither registry.json nor its copy is usable: keep what this worker served, if anything."""
        error, code = exc.reason, getattr(exc, "code", registry.UNREADABLE)
        # only a verified state is worth keeping: an unchecked one that now fails its check is dropped
        known = old is not None and old.registry_source != NO_STATE and old.registry_verified
        if old is None or old.registry_error != error:
            log.error(_REFUSED.get(code, "registry state unreadable") + " and no usable last-good copy; "
                      + ("keeping the labels this worker serves" if known else "serving no label"),
                      extra={"model": name, "reason": error, "fix": _fix(name, code, error)})
        if not known:
            return ModelState(name, MappingProxyType(versions), MappingProxyType({}), error,
                              registry_source=NO_STATE, registry_code=code)
        return ModelState(name, MappingProxyType(versions), old.labels, error, old.rollout, old.wanted, FROM_MEMORY,
                          code)

    @staticmethod
    def _servable_labels(name: str, state: dict[str, Any], versions: dict[int, VersionState],
                         old: ModelState | None) -> dict[str, int]:
        """Switch a label only to a version this worker has loaded; otherwise keep a good one.

        The good one is what this worker served before or, for a worker that has just booted,
        the newest loadable previous production version, so every worker lands on the same one.
        """
        labels = {}
        for label, version in state["labels"].items():
            entry = versions.get(version)
            if entry is not None and entry.status == AVAILABLE:
                labels[label] = version
                continue
            candidates = [old.labels.get(label)] if old else []
            if label == registry.PRODUCTION:
                candidates += list(reversed(state.get("production_stack", [])))
            kept = next((v for v in candidates if v in versions and versions[v].status == AVAILABLE), None)
            if kept is not None:
                labels[label] = kept
                log.error("label points at a version that is not loaded; serving a previous one",
                          extra={"model": name, "label": label, "version": version, "serving": kept})
            else:
                labels[label] = version  # nothing better: resolve() will answer 503 with the reason
        return labels

    def _load(self, name: str, version: int) -> VersionState:
        folder = artifacts.version_dir(self.root, name, version)
        backend = self.backend(name)
        try:
            # the master's copy, loaded before the fork, when this worker verifies the same files
            model = preload.take(folder, name=name, version=version, backend=backend)
            shared = model is not None
            model = model or runtime.load(folder, name=name, version=version, signing_key=self.signing_key,
                                          backend=backend)
        except ArtifactError as exc:
            log.error("model version refused", extra={"model": name, "version": version, "reason": str(exc)})
            self.on_load_failed(name, version)
            return VersionState(version, FAILED, str(exc))
        try:
            self.prepare(model)
        except Exception:  # preparing is an optimisation: the version serves without it
            log.exception("preparing a model version failed", extra={"model": name, "version": version})
        self.on_loaded(name, version, model.manifest)
        log.info("model version loaded", extra={"model": name, "version": version,
                                                 "load_seconds": round(model.load_seconds, 4),
                                                 "backend": model.backend, "before_fork": shared})
        return VersionState(version, AVAILABLE, None, model)

    def start_polling(self) -> Periodic:
        """Follow the disk from a daemon thread, so label changes need no restart."""
        self._poller = Periodic("catalog-poll", self.poll_seconds, self.refresh, wait_first=True)
        self._poller.start()
        return self._poller

    def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.stop()

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
            if label not in state.labels and state.registry_source == NO_STATE:
                # the label may well exist: saying 404 would tell clients the model lost it
                raise RegistryStateUnavailable(f"The registry state of {name!r} cannot be read, so where its "
                                               f"label {label!r} points is unknown.",
                                               details={"model": name, "label": label, "reason": state.registry_error})
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

    def route(self, name: str, version: int | None = None, label: str | None = None,
              routing_key: str | None = None, rand: Callable[[], float] = random.random) -> Route:
        """Choose the versions for one request: pinned, labelled, or production with its rollout.

        Only unqualified requests take part in the rollout (canary split, shadows); a canary,
        shadow or fallback version this worker could not load is left out rather than failing
        the request.
        """
        state = self.model(name)
        if version is not None or label is not None:
            return Route(self.resolve(name, version, label), "pinned" if version is not None else "label")
        production = self.resolve(name)
        rollout = state.rollout
        fallback = state.available(rollout.get("fallback"))
        chosen, role = production, "production"
        canary = rollout.get("canary")
        if canary and state.available(canary.get("version")) is not None:
            picked, role = choose_version(name, production.version, dict(rollout), routing_key, rand)
            chosen = state.available(picked) if role == "canary" else production
        if fallback is None and chosen is not production:
            fallback = production
        if fallback is not None and fallback.version == chosen.version:
            fallback = None
        shadows = tuple(m for v in rollout.get("shadow") or () if (m := state.available(v)) is not None
                        and m.version != chosen.version)
        return Route(chosen, role, fallback, shadows, rollout.get("budget_ms"))

    def warm_up(self) -> int:
        """Open every loaded version's ONNX Runtime session now (a worker calls it before serving)."""
        opened = 0
        for state in self._models.values():
            for entry in state.versions.values():
                if entry.model is not None and entry.model.backend == "onnx":
                    try:
                        entry.model.session()
                        opened += 1
                    except Exception:  # the first request will try again, and report a failure as usual
                        log.exception("opening an ONNX Runtime session failed", extra={
                            "model": state.name, "version": entry.version})
        return opened

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when some model has a ``production`` label, every such version is loaded, and
        every model with versions has a registry state.

        The version that counts is the one this worker serves as production. When registry.json
        names another that could not be loaded, the report says so (``wanted``) but the worker
        stays ready: it serves a verified version, and taking every replica out of rotation
        over a refused upgrade would turn a bad deploy into an outage.

        An unreadable registry.json is reported per model: ``registry_error`` (the reason, never
        the server's path), ``registry_code`` (``registry_unreadable``; ``registry_unverified`` for
        a file that does not match the audit trail, ``registry_unchecked`` for one that changed
        while the trail's database did not answer) and ``registry`` (where the state served
        comes from). Serving from
        the last-good copy, or from what this worker read before, stays ready: that state is
        the last one an operator committed, every worker serves the same, and the report tells
        the operator to restore the file. A model with versions but no state at all (no
        readable file, no copy, nothing read before) is ``REGISTRY_UNREADABLE`` and makes the
        worker unready: its production version is unknown, so unqualified requests would all
        fail here, and a load balancer should send them to a replica that knows.
        """
        report: dict[str, Any] = {}
        for state in self._models.values():
            entry = self._production_report(state)
            if state.registry_error is not None:
                entry = {**(entry or {}), "registry": state.registry_source, "registry_error": state.registry_error,
                         "registry_code": state.registry_code or registry.UNREADABLE}
                if state.registry_source == NO_STATE and state.versions:
                    entry["status"] = REGISTRY_UNREADABLE
            if entry:
                report[state.name] = entry
        ready = any("production" in r for r in report.values()) \
            and all(r.get("status", AVAILABLE) == AVAILABLE for r in report.values())
        return ready, report

    @staticmethod
    def _production_report(state: ModelState) -> dict[str, Any] | None:
        version = state.labels.get(registry.PRODUCTION)
        if version is None:
            return None
        entry = state.versions.get(version)
        report = {"production": version, "status": entry.status if entry else "MISSING"}
        wanted = state.wanted.get(registry.PRODUCTION)
        if wanted is not None and wanted != version:
            entry = state.versions.get(wanted)
            report.update(wanted=wanted, wanted_status=entry.status if entry else "MISSING",
                          wanted_reason=entry.reason if entry else "no such version on disk")
        return report
