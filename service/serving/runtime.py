"""Model runtime: load a verified artifact and compute predictions with joblib or ONNX Runtime.

The interface is small on purpose (``load``, ``predict`` -> ``Prediction``), as in MLServer's
runtimes. ``load`` unpickles and reads only the bytes ``artifacts.verify_version`` has just
checked. A version whose ONNX export packaging measured within 1e-9 of scikit-learn (``parity``)
answers through an ONNX Runtime session, created on first use in the process that predicts
(never inherited across a fork) unless the Gunicorn master shared it before forking
(``share_session``); every other version, and any forced to, answers through scikit-learn.
scikit-learn, joblib and pandas are imported when first needed: a batch run answered by ONNX
Runtime may load with ``lazy=True``, which keeps the verified pickle and unpickles it only when
the estimator itself is wanted (the server and its preload always unpickle at load). No Flask.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import ArtifactError, ConfigError, PredictionFailed
from service.models import artifacts, onnx_export, parity
from service.models.registry import installed_sklearn

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

AUTO, JOBLIB, ONNX = "auto", "joblib", "onnx"
BACKENDS = (AUTO, JOBLIB, ONNX)


@dataclass(frozen=True)
class BackendChoice:
    """Which backend each model should use: ``default`` unless ``overrides`` names the model."""

    default: str = AUTO
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __call__(self, name: str) -> str:
        return self.overrides.get(name, self.default)

    @classmethod
    def parse(cls, default: str, overrides: tuple[str, ...] = ()) -> BackendChoice:
        """Build from ``MODEL_BACKEND`` and ``MODEL_BACKENDS`` (``name=backend`` items); raise ``ConfigError``."""
        default = default.strip().lower()
        if default not in BACKENDS:
            raise ConfigError(f"MODEL_BACKEND must be one of {', '.join(BACKENDS)}, got {default!r}")
        chosen = {}
        for item in overrides:
            name, sep, backend = item.partition("=")
            backend = backend.strip().lower()
            if not sep or not artifacts.MODEL_NAME_RE.fullmatch(name.strip()) or backend not in BACKENDS:
                raise ConfigError(f"MODEL_BACKENDS items are model=backend with a backend among "
                                  f"{', '.join(BACKENDS)}, got {item!r}")
            chosen[name.strip()] = backend
        return cls(default, MappingProxyType(chosen))


@dataclass(frozen=True)
class Prediction:
    """What a model computed for one batch, in plain Python/numpy values."""

    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: list[Any] | None


@dataclass
class LoadedModel:
    """A verified model version ready to predict (its estimator unpickled, or its verified pickle held)."""

    name: str
    version: int
    manifest: dict[str, Any]
    _estimator: Any
    load_seconds: float
    onnx_bytes: bytes | None = field(default=None, repr=False)  # the verified export, when ONNX answers
    _pickled: bytes | None = field(default=None, repr=False, compare=False)  # verified, not yet unpickled
    _session: Any = field(default=None, repr=False, compare=False)
    _session_pid: int | None = field(default=None, repr=False, compare=False)  # None with a session: shared
    _session_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def estimator(self) -> Any:
        """The scikit-learn estimator, unpickled from the verified bytes on first use when loaded lazily."""
        if self._estimator is None and self._pickled is not None:
            with self._session_lock:
                if self._estimator is None:
                    self._estimator, self._pickled = _unpickle(self._pickled), None
        return self._estimator

    def _labels(self) -> np.ndarray:
        """The classes ONNX labels map back to: the estimator's own, or, before it is unpickled, the
        manifest's integers (what ``lazy_classes`` accepts) as int64."""
        if self._estimator is None and self._pickled is not None:
            return np.asarray(self.classes, dtype=np.int64)
        return self.estimator.classes_

    @property
    def backend(self) -> str:
        """The backend that answers this version: ``onnx`` or ``joblib``."""
        return ONNX if self.onnx_bytes is not None else JOBLIB

    def serving(self) -> dict[str, Any]:
        """What answers this version and how far from scikit-learn its answers were measured to be.

        joblib is scikit-learn itself (0.0); ONNX shows what packaging measured. The ONNX
        report's status and reason say why a version is not served through it.
        """
        report = (self.manifest.get("backends") or {}).get("onnx")
        report = report if isinstance(report, dict) else {}
        found = report.get("parity")
        measured = found.get("max_abs_diff") if isinstance(found, dict) else None
        return {"backend": self.backend, "max_abs_diff": measured if self.backend == ONNX else 0.0,
                "tolerance": parity.TOLERANCE,
                "onnx": {"status": report.get("status"), "max_abs_diff": measured,
                         "exact": parity.passes(report), "reason": report.get("reason")}}

    @property
    def features(self) -> list[dict[str, Any]]:
        return self.manifest["input"]["features"]

    @property
    def classes(self) -> list[Any] | None:
        return self.manifest["output"].get("classes")

    @property
    def has_probabilities(self) -> bool:
        return bool(self.manifest["output"].get("probabilities"))

    def frame(self, columns: dict[str, np.ndarray]) -> pd.DataFrame | np.ndarray:
        """Build the model's input the way it was trained: a typed DataFrame or a plain array."""
        if not self.manifest["input"].get("feature_names_in"):
            return np.column_stack([columns[f["name"]] for f in self.features])
        import pandas as pd

        data = {}
        for f in self.features:
            values = columns[f["name"]]
            dtype = f.get("dtype")
            if dtype and dtype != str(values.dtype) and not (values.dtype == object and dtype in ("object", "str")):
                if values.dtype.kind == "f" and _is_integer(dtype) and np.isnan(values).any():
                    data[f["name"]] = values  # NaN has no integer: a cast would make it -2**63, silently
                    continue
                try:
                    values = pd.Series(values).astype(dtype).to_numpy() if dtype == "category" else values.astype(dtype)
                except (TypeError, ValueError):
                    pass  # keep the validated values; e.g. a nullable int column stays float with NaN
            data[f["name"]] = values
        return pd.DataFrame(data, copy=False)

    def predict(self, columns: dict[str, np.ndarray], probabilities: bool = False,
                block: np.ndarray | None = None) -> Prediction:
        """Predict for validated columns; raise ``PredictionFailed`` if the backend raises.

        ``block`` is validation's float block (features x rows, in this version's feature order)
        when there is one: a one-matrix ONNX model takes it in one copy instead of stacking columns.
        """
        probabilities = probabilities and self.has_probabilities
        try:
            session, inputs = self.session() if self.onnx_bytes is not None else (None, None)
            if inputs is not None and not inputs.any_missing_string(columns):
                predicted, proba = self._predict_onnx(session, inputs.feeds(columns, block), probabilities)
            else:
                predicted, proba = self._predict_sklearn(columns, probabilities)
        except Exception as exc:  # the estimator is user code: any exception is its failure
            raise PredictionFailed(details={"model": self.name, "version": self.version,
                                            "reason": type(exc).__name__}) from exc
        return Prediction(predicted, proba, self.classes)

    def _predict_sklearn(self, columns: dict[str, np.ndarray], probabilities: bool) -> tuple[Any, Any]:
        import sklearn

        X = self.frame(columns)
        # the inputs were validated against the schema: scikit-learn's own checks would repeat it
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            predicted = np.asarray(self.estimator.predict(X))
            return predicted, self.estimator.predict_proba(X) if probabilities else None

    def _predict_onnx(self, session: Any, feeds: dict[str, np.ndarray], probabilities: bool) -> tuple[Any, Any]:
        outputs = session.run(None, feeds)
        if self.classes is None:
            return onnx_export.regression_values(outputs[0]), None
        predicted = onnx_export.decode_labels(outputs[0], self._labels())
        return predicted, np.asarray(outputs[1], dtype=np.float64) if probabilities else None

    def session(self) -> tuple[Any, onnx_export.Inputs]:
        """Return this process's ONNX Runtime session and how to feed it, creating them once."""
        pid = os.getpid()
        held = self._session
        if held is None or self._session_pid not in (pid, None):
            # lazily, per process: a session made after a fork is never inherited by the next one
            with self._session_lock:
                if self._session is None or self._session_pid not in (pid, None):
                    self._session, self._session_pid = self._open(), pid
                held = self._session
        return held

    def share_session(self) -> None:
        """Open this version's session for every process forked from this one (the Gunicorn master).

        Safe only because a session made as ``onnx_export.session`` makes it (one intra-op and one
        inter-op thread: the caller's) starts no thread; ``preload.hold_all`` checks that it did not.
        """
        with self._session_lock:
            self._session, self._session_pid = self._open(), None

    def release_session(self) -> None:
        """Drop the session; the next prediction in each process opens its own."""
        with self._session_lock:
            self._session, self._session_pid = None, None

    def _open(self) -> tuple[Any, onnx_export.Inputs]:
        session = onnx_export.session(self.onnx_bytes)
        return session, onnx_export.Inputs.of(self.features, self.manifest["backends"]["onnx"], session)


def _is_integer(dtype: str) -> bool:
    import pandas as pd

    try:
        return pd.api.types.is_integer_dtype(pd.api.types.pandas_dtype(dtype))
    except TypeError:
        return False


def load(folder: Path, *, name: str, version: int, signing_key: str | None = None,
         backend: str = AUTO, lazy: bool = False) -> LoadedModel:
    """Verify a version folder and only then unpickle it; raise ``ArtifactError`` on refusal.

    ``backend`` ``auto`` serves through ONNX Runtime when the manifest records that the export
    reproduced scikit-learn within ``parity.TOLERANCE`` at packaging (a manifest from before that
    check records no measurement and is served by joblib); ``onnx`` does whenever an export is
    stored; ``joblib`` never does. ``lazy`` holds the verified pickle instead when ONNX Runtime
    answers and the labels need no estimator (``lazy_classes``): the first use of ``estimator``
    unpickles it, with the same checks (a batch run then never imports scikit-learn).
    """
    start = time.perf_counter()
    verified = artifacts.verify_version(folder, expected_name=name, expected_version=version,
                                        signing_key=signing_key, sklearn_version=installed_sklearn())
    data = verified.model_path.read_bytes()
    # unpickle the very bytes that were hashed: a file swapped after the check cannot slip in
    expected = verified.manifest["files"][verified.manifest["model_file"]]["sha256"]
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), str(expected)):
        raise ArtifactError("model file changed while it was being loaded")
    onnx_bytes = _onnx_bytes(verified, backend)
    if lazy and onnx_bytes is not None and lazy_classes(verified.manifest["output"].get("classes")):
        return LoadedModel(name, version, verified.manifest, None, time.perf_counter() - start, onnx_bytes, data)
    return LoadedModel(name, version, verified.manifest, _unpickle(data), time.perf_counter() - start, onnx_bytes)


def lazy_classes(classes: list[Any] | None) -> bool:
    """Whether ONNX labels can be decoded without the estimator: a regressor's values, or integer classes
    (written as int64, what ``scoring.prediction_type`` gives an integer prediction column anyway)."""
    return classes is None or all(isinstance(c, int) and not isinstance(c, bool) for c in classes)


def _unpickle(data: bytes) -> Any:
    import joblib

    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise ArtifactError(f"model file could not be loaded: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(estimator, "predict", None)):
        raise ArtifactError(f"model file holds a {type(estimator).__name__}, not an estimator with predict()")
    return estimator


def _onnx_bytes(verified: artifacts.VerifiedVersion, backend: str) -> bytes | None:
    """Read the verified ONNX export when ``backend`` calls for it; ``None`` means joblib answers."""
    manifest = verified.manifest
    backends = manifest.get("backends")
    report = backends.get("onnx") if isinstance(backends, dict) else None
    report = report if isinstance(report, dict) else {}
    listed = onnx_export.ONNX_FILE in manifest["files"]
    if report.get("status") == onnx_export.OK and not listed:
        raise ArtifactError(f"manifest says the ONNX export passed parity but does not list {onnx_export.ONNX_FILE}")
    if listed and (report.get("layout") not in onnx_export.LAYOUTS or report.get("input_dtype") not in onnx_export.DTYPES):
        raise ArtifactError(f"manifest lists {onnx_export.ONNX_FILE} without a usable backends.onnx input layout")
    exact = report.get("status") == onnx_export.OK and parity.passes(report)
    if backend == AUTO and report.get("status") == onnx_export.OK and not exact:
        log.info("ONNX export packaged before exact parity was measured; serving with joblib (package it again)",
                 extra={"model": manifest["name"], "version": manifest["version"]})
    if not (backend == ONNX or (backend == AUTO and exact)):
        return None
    if not listed:
        log.warning("ONNX backend requested but this version has no ONNX export; serving with joblib",
                    extra={"model": manifest["name"], "version": manifest["version"], "reason": report.get("reason")})
        return None
    data = (verified.folder / onnx_export.ONNX_FILE).read_bytes()
    # run the very bytes that were hashed, as for the model file
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), str(manifest["files"][onnx_export.ONNX_FILE]["sha256"])):
        raise ArtifactError(f"{onnx_export.ONNX_FILE} changed while it was being loaded")
    return data
