"""The model card of one version: what it is for, what it accepts, how it did and how it does.

``build_card`` gathers the card from the manifest (the human-written part given at packaging,
the input schema, data fingerprints, validation metrics and their gate), the registry history
(when the version went live), the monitoring report since then (live metrics, drift, bias),
global feature importance (``service.explain``) and the parent version's manifest (what
changed). ``markdown`` renders it as text; the HTTP layer draws the same dict as HTML. Inputs
flagged as personal data show no category or bound (``service.models.pii.public_feature``). No Flask.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from service.errors import ArtifactError, ServiceError
from service.explain import importance
from service.models import artifacts, pii, registry
from service.monitoring.report import Monitoring

SCHEMA_COLUMNS = ("name", "type", "required", "nullable", "min", "max", "categories", "pii", "sensitive", "description")
TOP_DRIFT = 10


def build_card(monitoring: Monitoring, root: Path, name: str, version: int) -> dict[str, Any]:
    """Gather the card of ``name`` version ``version`` (loaded in ``monitoring.catalog``)."""
    model = monitoring.catalog.resolve(name, version)
    manifest = model.manifest
    history = _history(root, name)
    deployed = deployed_at(history, version)
    since = _timestamp(deployed or manifest.get("created_at"))
    section = monitoring.version_report(model, None, None, [], since)
    state = monitoring.catalog.model(name)
    labels = sorted(label for label, v in state.labels.items() if v == version)
    parent = state.available(manifest.get("parent_version"))
    about = {key: manifest.get(key) for key in ("description", "task", "estimator", "created_at", "created_by")}
    about["structure"] = structure(model.estimator)
    about["serving"] = model.serving()  # the backend that answers, and its measured deviation from scikit-learn
    return {
        "model": name, "version": version, "labels": labels, "deployed_at": deployed,
        "about": about,
        "libraries": manifest.get("libraries", {}),
        "intended_use": (manifest.get("card") or "").strip(),
        "inputs": [{key: feature.get(key) for key in SCHEMA_COLUMNS}
                   for feature in pii.public_features(manifest["input"]["features"])],
        "outputs": manifest.get("output", {}),
        "data": data_section(manifest),
        "validation": validation(manifest.get("metrics") or {}),
        "live": live(section, deployed or manifest.get("created_at")),
        "bias": section.get("bias", {}),
        "importance": _importance(model),
        "retrain": manifest.get("retrain"),
        "changes": changes(manifest, _parent(root, name, manifest.get("parent_version")),
                           None if parent is None else structure(parent.estimator), about["structure"]),
    }


def data_section(manifest: dict[str, Any]) -> dict[str, Any]:
    """The data a version was trained, evaluated and profiled on, each named for what it is.

    Packaged without training data (no ``--train`` or ``--reference``), ``training`` is None: the
    hold-out set is then the only data the server saw, and the drift reference was profiled on it.
    """
    training = manifest.get("training_data") or None
    return {"training": training, "evaluation": manifest.get("evaluation_data"),
            "reference_rows": (manifest.get("reference_profile") or {}).get("rows"),
            "reference_of": "training data" if training else "hold-out (evaluation) data"}


def structure(estimator: Any) -> str:
    """The estimator's steps by class name (``StandardScaler → LogisticRegression``)."""
    steps = getattr(estimator, "steps", None)
    if not steps:
        return type(estimator).__name__
    return " → ".join(type(step).__name__ for _, step in steps if step not in (None, "passthrough"))


def deployed_at(history: list[dict[str, Any]], version: int) -> str | None:
    """When the version first took a label or a canary share (ISO time), from the registry history."""
    for entry in history:
        canary = entry.get("canary") if isinstance(entry.get("canary"), dict) else {}
        labelled = entry.get("version") == version and entry.get("label")
        if labelled or canary.get("version") == version:
            return entry.get("at")
    return None


def validation(metrics: dict[str, Any]) -> dict[str, Any]:
    """Hold-out and cross-validation figures, and each gate rule with what was measured."""
    holdout = metrics.get("holdout") or {}
    gate = []
    for rule in metrics.get("thresholds") or ():
        measured = holdout.get(rule["metric"])
        passed = None if measured is None else (measured >= rule["value"] if rule["kind"] == "min" else measured <= rule["value"])
        gate.append({"metric": rule["metric"], "rule": f"{'>=' if rule['kind'] == 'min' else '<='} {rule['value']:g}",
                     "measured": measured, "passed": passed})
    return {"holdout": holdout, "holdout_rows": metrics.get("holdout_rows"), "cv": metrics.get("cv"), "gate": gate}


def live(section: dict[str, Any], since: str | None) -> dict[str, Any]:
    """Live metrics against labelled feedback, and drift, over the predictions since deployment."""
    performance, drift = section.get("performance", {}), section.get("drift", {})
    features = sorted(((name, entry) for name, entry in drift.get("features", {}).items()),
                      key=lambda item: -(item[1].get("psi") or 0.0))
    return {"since": since, "predictions": section.get("n", 0), "status": performance.get("status"),
            "labelled": performance.get("labelled", 0), "metrics": performance.get("metrics", {}),
            "reference": performance.get("reference", {}), "drift_status": drift.get("status"),
            "prediction_drift": (drift.get("prediction") or {}).get("psi"),
            "drift": [{"feature": name, "status": entry.get("status"), "psi": entry.get("psi")}
                      for name, entry in features[:TOP_DRIFT] if entry.get("psi") is not None]}


def changes(manifest: dict[str, Any], parent: dict[str, Any] | None, parent_structure: str | None = None,
            this_structure: str | None = None) -> dict[str, Any]:
    """What differs from the parent version: changelog, estimator, schema, data and metrics.

    The structures (``structure``) tell apart two Pipelines the manifests name alike.
    """
    if parent is None:
        return {"parent": manifest.get("parent_version"), "changelog": manifest.get("changelog") or "",
                "available": False}
    mine = {f["name"]: f for f in manifest["input"]["features"]}
    theirs = {f["name"]: f for f in parent["input"]["features"]}
    changed = [{"feature": name, "fields": sorted(k for k in SCHEMA_COLUMNS if mine[name].get(k) != theirs[name].get(k))}
               for name in mine if name in theirs and any(mine[name].get(k) != theirs[name].get(k) for k in SCHEMA_COLUMNS)]
    now, before = (manifest.get("metrics") or {}).get("holdout") or {}, (parent.get("metrics") or {}).get("holdout") or {}
    return {
        "parent": parent["version"], "available": True, "changelog": manifest.get("changelog") or "",
        "estimator": _estimator_change(manifest, parent, parent_structure, this_structure),
        "features_added": [n for n in mine if n not in theirs], "features_removed": [n for n in theirs if n not in mine],
        "features_changed": changed,
        "evaluation_data_changed": (manifest.get("evaluation_data") or {}).get("sha256")
        != (parent.get("evaluation_data") or {}).get("sha256"),
        "metrics": {m: {"parent": before[m], "this": now[m], "delta": now[m] - before[m]} for m in now if m in before},
    }


def _estimator_change(manifest: dict[str, Any], parent: dict[str, Any], parent_structure: str | None,
                      this_structure: str | None) -> dict[str, str] | None:
    if parent_structure and this_structure:
        return None if parent_structure == this_structure else {"parent": parent_structure, "this": this_structure}
    if manifest.get("estimator") == parent.get("estimator"):
        return None
    return {"parent": parent.get("estimator"), "this": manifest.get("estimator")}


def _importance(model: Any) -> dict[str, Any]:
    try:
        found = importance(model)
    except ServiceError as exc:
        return {"available": False, "reason": exc.message}
    if found is None:
        return {"available": False, "reason": "the manifest has no reference profile to compute it on"}
    return {"available": True, **found}


def _history(root: Path, name: str) -> list[dict[str, Any]]:
    try:
        return registry.read_state(root, name).get("history", [])
    except ArtifactError:  # an unreadable registry.json: the card goes without a deployment time
        return []


def _parent(root: Path, name: str, version: int | None) -> dict[str, Any] | None:
    if not version:
        return None
    try:
        return artifacts.read_manifest(artifacts.version_dir(root, name, version))
    except (ArtifactError, OSError, ValueError):  # the parent was collected or is unreadable
        return None


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
