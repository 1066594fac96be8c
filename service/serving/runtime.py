"""Model runtime: load a verified joblib artifact and compute predictions.

The interface is small on purpose (``load``, ``predict`` -> ``Prediction``), as in MLServer's
runtimes. ``load`` unpickles only what ``artifacts.verify_version`` has just checked. No Flask.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

from service.errors import ArtifactError, PredictionFailed
from service.models import artifacts


@dataclass(frozen=True)
class Prediction:
    """What a model computed for one batch, in plain Python/numpy values."""

    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: list[Any] | None


@dataclass
class LoadedModel:
    """A verified, unpickled model version ready to predict."""

    name: str
    version: int
    manifest: dict[str, Any]
    estimator: Any
    load_seconds: float

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
        data = {}
        for f in self.features:
            values = columns[f["name"]]
            dtype = f.get("dtype")
            if dtype and dtype != str(values.dtype) and not (values.dtype == object and dtype in ("object", "str")):
                try:
                    values = pd.Series(values).astype(dtype).to_numpy() if dtype == "category" else values.astype(dtype)
                except (TypeError, ValueError):
                    pass  # keep the validated values; e.g. a nullable int column stays float with NaN
            data[f["name"]] = values
        return pd.DataFrame(data, copy=False)

    def predict(self, columns: dict[str, np.ndarray], probabilities: bool = False) -> Prediction:
        """Predict for validated columns; raise ``PredictionFailed`` if the estimator raises."""
        X = self.frame(columns)
        try:
            predicted = np.asarray(self.estimator.predict(X))
            proba = self.estimator.predict_proba(X) if probabilities and self.has_probabilities else None
        except Exception as exc:  # the estimator is user code: any exception is its failure
            raise PredictionFailed(details={"model": self.name, "version": self.version,
                                            "reason": type(exc).__name__}) from exc
        return Prediction(predicted, proba, self.classes)


def load(folder: Path, *, name: str, version: int, signing_key: str | None = None) -> LoadedModel:
    """Verify a version folder and only then unpickle it; raise ``ArtifactError`` on refusal."""
    start = time.perf_counter()
    verified = artifacts.verify_version(folder, expected_name=name, expected_version=version,
                                        signing_key=signing_key, sklearn_version=sklearn.__version__)
    data = verified.model_path.read_bytes()
    # unpickle the very bytes that were hashed: a file swapped after the check cannot slip in
    expected = verified.manifest["files"][verified.manifest["model_file"]]["sha256"]
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), str(expected)):
        raise ArtifactError("model file changed while it was being loaded")
    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise ArtifactError(f"model file could not be loaded: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(estimator, "predict", None)):
        raise ArtifactError(f"model file holds a {type(estimator).__name__}, not an estimator with predict()")
    return LoadedModel(name, version, verified.manifest, estimator, time.perf_counter() - start)
