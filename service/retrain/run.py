"""One retraining run: champion in, challenger fitted, judged, and packaged (and rolled out) when it wins.

The champion is the ``production`` version, verified and loaded as the server loads it. The
challenger is ``sklearn.base.clone`` of its fitted estimator (same hyper-parameters), fitted on
the base training file plus the older labelled production rows; the newest share of labelled
rows (a time split) is the hold-out neither has seen. ``service.retrain.judge`` decides; a
challenger that wins is packaged through ``service.models.packaging`` with its lineage in the
manifest (``retrain``), and ``then`` starts a shadow or a canary with the registry's own rollout
(the auto-rollback rules in force apply to it). The run reads the store without a write
transaction and holds the registry lock only for the moments ``package`` and ``rollout`` hold
it, so serving workers never wait on it. Who ran it and what came out go to the audit trail. No
Flask.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import clone

from service.models import artifacts, registry
from service.models.evaluation import model_input
from service.models.packaging import Threshold, fingerprint, package_model
from service.models.profile import profile_frame
from service.retrain import base_data, production
from service.retrain.judge import Settings, Verdict, compare, primary_metric
from service.retrain.labels import plain
from service.security import audit
from service.serving import runtime
from service.store import Store

SHADOW, CANARY = "shadow", "canary"
#: Schema keys a challenger inherits from the champion (ranges, flags), so its schema means the same.
INHERITED_KEYS = ("type", "required", "nullable", "min", "max", "categories", "pii", "sensitive", "description")


@dataclass(frozen=True)
class Rollout:
    """What to start once a challenger is packaged: a shadow, or a canary at ``weight`` percent."""

    kind: str
    weight: float | None = None

    @classmethod
    def parse(cls, text: str) -> Rollout:
        kind, _, weight = text.partition(":")
        if kind == SHADOW and not weight:
            return cls(SHADOW)
        if kind == CANARY and weight:
            try:
                value = float(weight.rstrip("%"))
            except ValueError:
                value = math.nan
            if 0 < value <= 100:
                return cls(CANARY, value)
        raise ValueError(f"--then {text!r}: expected shadow or canary:W with W a percentage in (0, 100]")


@dataclass(frozen=True)
class Request:
    """What one run is asked to do."""

    name: str
    train: Path
    target: str
    since_seconds: float
    holdout_share: float = 0.2
    min_gain: float = 0.0
    metric: str | None = None
    max_rows: int = 200_000
    min_holdout_rows: int = 30
    bootstrap: int = 1000
    keep_failed: bool = False
    then: Rollout | None = None
    reason: str = ""


@dataclass
class Services:
    """Where the run reads and writes, and who it acts for."""

    root: Path
    store: Store
    signing_key: Any
    actor: str


def retrain(request: Request, services: Services, now: float | None = None) -> dict[str, Any]:
    """Run one retraining and return its report (``service.retrain.report`` renders it)."""
    now = time.time() if now is None else now
    if not 0 < request.holdout_share < 1:
        raise ValueError("--holdout-last must be a share between 0% and 100%, e.g. 20%")
    champion = _champion(services, request.name)
    manifest = champion.manifest
    features, task = manifest["input"]["features"], manifest["task"]
    classes = (manifest.get("output") or {}).get("classes")
    audit.record_quietly(services.store, services.actor, "model.retrain.started", request.name,
                         {"champion": champion.version, "train": str(request.train), "since_seconds": request.since_seconds})
    base = base_data.read(request.train, request.target, features, task, classes, max_rows=request.max_rows)
    since = now - request.since_seconds
    found = production.read(services.store, request.name, features, task, classes, since=since,
                            max_rows=request.max_rows)
    cut = len(found.X) - math.ceil(len(found.X) * request.holdout_share)
    learn_X, learn_y = found.X.iloc[:cut], found.y.iloc[:cut]
    hold_X, hold_y = found.X.iloc[cut:].reset_index(drop=True), found.y.iloc[cut:].reset_index(drop=True)
    parts = [(part_X, part_y) for part_X, part_y in ((base.X, base.y), (learn_X, learn_y)) if len(part_X)]
    X = pd.concat([p[0] for p in parts], ignore_index=True) if parts else base.X
    # one dtype for the labels of both sources (an empty part would make them objects)
    y = pd.Series(plain(pd.concat([p[1] for p in parts], ignore_index=True).to_numpy(dtype=object))) if parts else base.y
    if not len(X):
        raise ValueError("no rows to fit on: --train gave none and no labelled production row is older than the hold-out")
    challenger = clone(champion.estimator).fit(model_input(champion.estimator, X), y)
    settings = Settings(request.metric or primary_metric(manifest, task), request.min_gain, request.min_holdout_rows,
                        request.bootstrap)
    thresholds = [Threshold(t["metric"], t["kind"], float(t["value"]))
                  for t in (manifest.get("metrics") or {}).get("thresholds") or []]
    verdict = compare(champion.estimator, challenger, hold_X, hold_y, task, settings, features=features,
                      thresholds=thresholds, champion_profile=manifest.get("reference_profile") or {},
                      challenger_profile={"features": profile_frame(X, features, manifest.get("pii_salt"))})
    window = {"since": since, "until": now, "holdout_from": float(found.ts[cut]) if cut < len(found.ts) else None}
    report = {
        "model": request.name, "champion": champion.version, "challenger": None, "packaged": False,
        "window": window,
        "rows": {"base": {"file": str(request.train), "read": base.read, "kept": len(base.X), "left_out": base.left_out,
                          "capped": base.capped},
                 "production": {"scanned": found.scanned, "labelled": len(found.X), "left_out": found.left_out,
                                "unstored_features": found.unstored, "capped": found.capped,
                                "learned_from": cut, "holdout": len(hold_X)},
                 "fitted_on": len(X)},
        "comparison": verdict.as_dict(),
        "rollout": None,
    }
    if verdict.passed or request.keep_failed:
        packaged = _package(request, services, champion, challenger, verdict, thresholds, hold_X, hold_y, X,
                            base, found, cut, window)
        report.update(challenger=packaged["version"], packaged=True)
        if verdict.passed and request.then is not None:
            report["rollout"] = _start(request, services, packaged["version"])
    audit.record_quietly(services.store, services.actor, "model.retrain.finished", request.name,
                         {"champion": champion.version, "challenger": report["challenger"], "passed": verdict.passed,
                          "decided_by": verdict.decided_by["name"], "reason": verdict.decided_by["reason"],
                          "rollout": report["rollout"]})
    return report


def _champion(services: Services, name: str) -> runtime.LoadedModel:
    artifacts.check_model_name(name)
    version = registry.read_state(services.root, name)["labels"].get(registry.PRODUCTION)
    if version is None:
        raise ValueError(f"model {name!r} has no production version to retrain")
    return runtime.load(artifacts.version_dir(services.root, name, version), name=name, version=version,
                        signing_key=services.signing_key, backend=runtime.JOBLIB)


def _package(request: Request, services: Services, champion: runtime.LoadedModel, challenger: Any, verdict: Verdict,
             thresholds: list[Threshold], hold_X: pd.DataFrame, hold_y: pd.Series, X: pd.DataFrame,
             base: base_data.BaseRows, found: production.ProductionRows, cut: int,
             window: dict[str, Any]) -> dict[str, Any]:
    manifest = champion.manifest
    learned = production.ProductionRows(found.X.iloc[:cut], found.y.iloc[:cut], found.ts[:cut], found.ids[:cut])
    held = production.ProductionRows(found.X.iloc[cut:], found.y.iloc[cut:], found.ts[cut:], found.ids[cut:])
    lineage = {
        "parent_version": champion.version,
        "base_data": fingerprint(base.X, base.y) | {"source": str(request.train)},
        "production_rows": learned.fingerprint() | {"left_out": found.left_out},
        "holdout_rows": held.fingerprint(),
        "window": window,
        "comparison": verdict.as_dict(),
        "kept_failed": not verdict.passed,
    }
    overrides = {f["name"]: {k: f[k] for k in INHERITED_KEYS if k in f and not (k == "categories" and f.get("pii"))}
                 for f in manifest["input"]["features"]}
    outcome = "passed" if verdict.passed else "failed, kept with --keep-failed"
    gate = [t for t in thresholds if not t.metric.startswith("cv.")]  # no cross-validation in a retrain
    written = package_model(
        challenger, request.name, services.root, hold_X, hold_y, description=manifest.get("description", ""),
        changelog=request.reason or f"Retrained from version {champion.version} on production feedback ({outcome}: "
                                    f"{verdict.decided_by['reason']}).",
        overrides=overrides, thresholds=gate if verdict.passed else (), signing_key=services.signing_key,
        training_data={"source": "retrain", "rows": len(X), "base_rows": len(base.X), "production_rows": cut},
        evaluation_source=f"newest {len(hold_X)} labelled production rows", reference=X, card=manifest.get("card", ""),
        subject=manifest.get("subject"), retrain=lineage)
    registry.record_packaged(services.root, written, actor=services.actor)
    return written


def _start(request: Request, services: Services, version: int) -> dict[str, Any]:
    then = request.then
    reason = f"retrained challenger {version}"
    if then.kind == SHADOW:  # type: ignore[union-attr]
        shadows = registry.read_state(services.root, request.name)["rollout"]["shadow"]
        entry = registry.set_rollout(services.root, request.name, shadow=[*shadows, version], actor=services.actor,
                                     reason=reason, signing_key=services.signing_key)
    else:
        entry = registry.set_rollout(services.root, request.name,
                                     canary={"version": version, "weight": then.weight},  # type: ignore[union-attr]
                                     actor=services.actor, reason=reason, signing_key=services.signing_key)
    return {"kind": then.kind, "version": version, "weight": then.weight,  # type: ignore[union-attr]
            "rules": entry["after"]["rules"]}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``45m`` or ``90s``; raise ``ValueError`` otherwise."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"--since {text!r}: expected a number and a unit, e.g. 30d, 12h, 45m") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"--since {text!r}: must be positive")
    return value


def parse_share(text: str) -> float:
    """A share from ``20%`` or ``0.2``; raise ``ValueError`` otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"--holdout-last {text!r}: expected a percentage, e.g. 20%") from None
    if not 0 < value < 1:
        raise ValueError(f"--holdout-last {text!r}: must be between 0% and 100%")
    return value
