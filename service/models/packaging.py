"""Packaging: turn a fitted estimator into a new immutable, hash-verified version.

Infers the input schema from the model and the data, evaluates the model on hold-out data,
applies the quality gate, profiles the data for drift, and writes the version folder
atomically (a temp folder renamed into place). No Flask here.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import is_classifier, is_regressor

from service.errors import QualityGateFailed
from service.models import artifacts, compatibility, onnx_export, pii, pmml_export, registry, schema_inference
from service.models.cross_validation import gate_values
from service.models.evaluation import averaging, evaluate, model_input
from service.models.profile import profile_frame, profile_predictions

FEATURE_TYPES = artifacts.FEATURE_TYPES
FEATURE_KEYS = schema_inference.FEATURE_KEYS


@dataclass(frozen=True)
class Threshold:
    """One quality-gate rule: ``metric`` must be ``>= value`` (kind "min") or ``<= value`` ("max")."""

    metric: str
    kind: str
    value: float

    @classmethod
    def parse(cls, text: str, kind: str) -> Threshold:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected METRIC=VALUE, got {text!r}")
        try:
            return cls(name.strip(), kind, float(raw))
        except ValueError:
            raise ValueError(f"threshold for {name.strip()!r} is not a number") from None

    def passes(self, measured: float) -> bool:
        return measured >= self.value if self.kind == "min" else measured <= self.value


def task_of(model: Any) -> str:
    try:
        if is_classifier(model):
            return "classification"
        if is_regressor(model):
            return "regression"
    except AttributeError:  # scikit-learn >= 1.6 raises for objects without __sklearn_tags__
        pass
    raise ValueError("the model is neither a scikit-learn classifier nor a regressor")


def infer_features(model: Any, data: pd.DataFrame, overrides: dict[str, dict[str, Any]] | None = None,
                   strict_ranges: bool = False) -> list[dict[str, Any]]:
    """Infer the ordered input schema from what the model knows, then the data's columns and dtypes."""
    return schema_inference.infer_schema(model, data, overrides=overrides, strict_ranges=strict_ranges).features


apply_overrides = schema_inference.apply_overrides


def check_quality_gate(measured: dict[str, float], thresholds: list[Threshold]) -> None:
    """Raise ``QualityGateFailed`` listing every missed threshold next to the measured values."""
    unknown = [t.metric for t in thresholds if t.metric not in measured]
    if unknown:
        raise QualityGateFailed(f"unknown metric(s) {', '.join(unknown)}; measured: {_fmt(measured)}")
    failed = [t for t in thresholds if not t.passes(measured[t.metric])]
    if failed:
        rules = "; ".join(f"{t.metric} = {measured[t.metric]:.4f}, required {'>=' if t.kind == 'min' else '<='} {t.value:g}"
                          for t in failed)
        raise QualityGateFailed(f"quality gate failed: {rules} (all measured: {_fmt(measured)})")


def fingerprint(X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """Identify the evaluation data by content, so two manifests can say they saw the same rows."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(y, index=False).to_numpy().tobytes())
    return {"sha256": digest.hexdigest(), "rows": len(X), "columns": [str(c) for c in X.columns]}


def package_model(model: Any, name: str, root: Path, X: pd.DataFrame, y: pd.Series, *,
                  description: str = "", changelog: str = "", overrides: dict[str, Any] | None = None,
                  thresholds: list[Threshold] = (), cv: dict[str, Any] | None = None,
                  strict_ranges: bool = False, signing_key: str | None = None,
                  training_data: dict[str, Any] | None = None, evaluation_source: str | None = None,
                  reference: pd.DataFrame | None = None, card: str = "",
                  require_card: bool = False, feature_names: list[str] | None = None,
                  breaking: bool = False, pickled_with: str | None = None,
                  subject: str | None = None, pmml: bool = False,
                  retrain: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate, gate and write ``model`` as the next version of ``name``; return the manifest.

    The drift reference profile describes ``reference`` (the training data, when given) or
    else the hold-out data ``X``. ``card`` is the human-written part of the model card
    (intended use, limitations; Markdown); ``require_card`` refuses to package without one.
    The schema comes from the model first, then ``reference`` (else ``X``); a version whose
    task, classes or features differ from production's is refused unless ``breaking``.
    ``pickled_with`` is the scikit-learn version that pickled the model handed in. ``subject``
    names the feature that identifies the person a row is about (recorded as the manifest's
    top-level ``subject``, always personal data); personal-data features keep no raw value in the
    manifest, their hashes use the manifest's random ``pii_salt``. ``pmml`` also converts the model to
    PMML (``export_pmml``), which needs the converter and Java where packaging runs. ``retrain``
    is the lineage of a version retrained from production feedback (``service.retrain``): its
    ``parent_version`` becomes the manifest's, the rest is kept as the manifest's ``retrain``.
    """
    artifacts.check_model_name(name)
    if require_card and not card.strip():
        raise ValueError("a model card is required (REQUIRE_MODEL_CARD): give its text with --card card.md")
    task = task_of(model)
    salt = pii.new_salt()
    schema = schema_inference.infer_schema(model, X, reference=reference, overrides=overrides,
                                           names=feature_names, strict_ranges=strict_ranges, salt=salt,
                                           subject=subject)
    features = schema.features
    X = X[[f["name"] for f in features]]
    holdout = evaluate(model, X, y, task)
    check_quality_gate(gate_values(holdout, cv), list(thresholds))
    classes = [_native(c) for c in model.classes_] if task == "classification" else None
    manifest: dict[str, Any] = {
        "format_version": artifacts.FORMAT_VERSION,
        "name": name,
        "version": None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "created_by": f"{_user()}@{socket.gethostname()}",
        "description": description,
        "changelog": changelog,
        "card": card,
        "parent_version": (retrain or {}).get("parent_version"),
        "subject": subject,
        "pii_salt": salt,
        "task": task,
        "estimator": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_format": "joblib",
        "model_file": artifacts.MODEL_FILE,
        # model.joblib is written here, so these are the versions that pickled it (the load check's)
        "libraries": {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
                      "numpy": np.__version__, "joblib": joblib.__version__, "pandas": pd.__version__},
        "pickled_with": {"scikit-learn": pickled_with or sklearn.__version__},
        "files": {},
        "input": {"features": features, "feature_names_in": hasattr(model, "feature_names_in_"),
                  "sources": schema.sources, "notes": schema.notes},
        "output": {"classes": classes, "probabilities": task == "classification" and hasattr(model, "predict_proba")},
        "metrics": {"holdout": holdout, "holdout_rows": len(X), "cv": cv, "averaging": averaging(classes),
                    "thresholds": [t.__dict__ for t in thresholds]},
        "training_data": training_data,
        "evaluation_data": fingerprint(X, y) | ({"source": evaluation_source} if evaluation_source else {}),
        "reference_profile": _reference_profile(model, X if reference is None else reference, features, task, salt),
    }
    if retrain is not None:
        manifest["retrain"] = retrain
    manifest["compatibility"] = check_meaning(Path(root), manifest, breaking)
    exported = onnx_export.export(model, X, features, task)
    manifest["backends"] = {"onnx": exported.report}
    extra = {onnx_export.ONNX_FILE: exported.data} if exported.data is not None else {}
    extra |= export_pmml(manifest, model, X, features, task) if pmml else {}
    return write_version(model, manifest, Path(root), signing_key, extra)


def export_pmml(manifest: dict[str, Any], model: Any, X: pd.DataFrame, features: list[dict[str, Any]],
                task: str) -> dict[str, bytes]:
    """Convert ``model`` to PMML and record its parity report as ``exports.pmml`` in ``manifest``.

    Return the file to store with the version (hashed in the manifest like the model file), or
    nothing when the converter refused the model or its PMML missed parity: the report says why.
    """
    exported = pmml_export.export(model, X, features, task)
    manifest["exports"] = {"pmml": exported.report}
    return {pmml_export.PMML_FILE: exported.data} if exported.data is not None else {}


def check_meaning(root: Path, manifest: dict[str, Any], breaking: bool) -> dict[str, Any] | None:
    """Compare with the production version; refuse a change of meaning unless ``breaking``."""
    production = registry.read_state(root, manifest["name"])["labels"].get(registry.PRODUCTION) \
        if artifacts.model_dir(root, manifest["name"]).is_dir() else None
    if production is None:
        return None
    before = artifacts.read_manifest(artifacts.version_dir(root, manifest["name"], production))
    changes = compatibility.compare(before, manifest)
    if changes["breaking"] and not breaking:
        raise ValueError(f"{manifest['name']} would change meaning against production version {production} "
                         f"({'; '.join(changes['breaking'])}): give --breaking to package it anyway")
    return changes


def _reference_profile(model: Any, data: pd.DataFrame, features: list[dict[str, Any]], task: str,
                       salt: str) -> dict[str, Any]:
    data = data[[f["name"] for f in features]]
    return {"rows": len(data), "features": profile_frame(data, features, salt),
            "prediction": profile_predictions(model.predict(model_input(model, data)), task)}


def write_version(model: Any, manifest: dict[str, Any], root: Path, signing_key: str | None,
                  extra: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Write a version folder under a temp name, then rename it to the next free version number.

    ``extra`` maps more file names to their bytes (the ONNX and PMML exports); each is hashed in the
    manifest like the model file, so loading verifies it the same way.
    """
    folder = artifacts.model_dir(root, manifest["name"])
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    os.chmod(staging, 0o755)  # nosec B103  # noqa: S103  a folder: mkdtemp makes it private; a server running as another user reads it
    try:
        joblib.dump(model, staging / artifacts.MODEL_FILE)
        for filename, data in (extra or {}).items():
            (staging / filename).write_bytes(data)
        written = [artifacts.MODEL_FILE, *(extra or {})]
        parent = manifest.get("parent_version")  # a retrained version names the version it was cloned from
        manifest["files"] = {filename: artifacts.file_entry(staging / filename) for filename in written}
        manifest["content_sha256"] = artifacts.content_hash(manifest["files"])
        while True:
            versions = artifacts.list_versions(root, manifest["name"])
            manifest["version"] = (versions[-1] + 1) if versions else 1
            manifest["parent_version"] = parent if parent is not None else (versions[-1] if versions else None)
            signature = artifacts.sign_manifest(manifest, signing_key) if signing_key else None
            if signature:  # Ed25519 when a private key is given (recommended), else the HMAC key
                manifest["signature"] = signature
            artifacts.write_json_atomic(staging / artifacts.MANIFEST, manifest, mode=0o444)
            for filename in written:
                os.chmod(staging / filename, 0o444)
            try:
                # rename() of a folder onto an existing non-empty folder fails: two packagers
                # racing for the same number cannot overwrite each other.
                os.rename(staging, folder / str(manifest["version"]))
                return manifest
            except OSError:
                if not (folder / str(manifest["version"])).exists():
                    raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _fmt(measured: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in measured.items())
