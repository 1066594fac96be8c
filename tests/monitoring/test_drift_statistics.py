"""Statistical behaviour of drift detection on the demo models and their real data.

Unchanged traffic (windows drawn from the very rows the reference profile describes) must
rarely alert, and a half-standard-deviation shift of one feature, or a class-prior shift,
must alert within one window of 500 predictions. Seeds are fixed, so the test is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from service.monitoring.drift import drift_report
from service.serving import runtime

WINDOWS = 40
WINDOW = 500
MAX_FALSE_ALARMS = 2  # one window in twenty


def training_split(name: str) -> tuple[pd.DataFrame, pd.Series]:
    """Rebuild the training split the reference profile was built from, as ``service.models.demo`` does."""
    if name == "breast-cancer":
        data = load_breast_cancer(as_frame=True)
        X, y, stratify = data.data, data.target, data.target
    else:
        data = load_diabetes(as_frame=True, scaled=False)
        X, y, stratify = data.data.astype({"age": "int64", "sex": "int64"}), data.target, None
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=42, stratify=stratify)
    return X_train, y_train


@pytest.fixture(scope="module")
def models(demo_root: Path) -> dict[str, runtime.LoadedModel]:
    return {name: runtime.load(demo_root / name / "1", name=name, version=1) for name in ("breast-cancer", "diabetes")}


def report(model: runtime.LoadedModel, window: pd.DataFrame) -> dict:
    columns = {c: window[c].to_numpy() for c in window.columns}
    predictions = model.predict(columns).predictions
    manifest = model.manifest
    return drift_report(manifest["reference_profile"], model.features, columns, predictions, manifest["task"])


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
def test_reference_traffic_rarely_alerts(models, name):
    X, _ = training_split(name)
    assert len(X) == models[name].manifest["reference_profile"]["rows"]
    rng = np.random.default_rng(2024)
    statuses = [report(models[name], X.iloc[rng.integers(0, len(X), WINDOW)])["status"] for _ in range(WINDOWS)]
    assert statuses.count("alert") <= MAX_FALSE_ALARMS, statuses


@pytest.mark.parametrize(("name", "feature", "direction"), [
    ("breast-cancer", "mean radius", 1), ("breast-cancer", "worst area", 1), ("breast-cancer", "mean texture", -1),
    ("diabetes", "bmi", 1), ("diabetes", "s5", -1), ("diabetes", "bp", 1),
    ("diabetes", "s4", 1),  # mostly whole numbers: the shift hides inside quantile bins, KS sees it
])
def test_half_standard_deviation_shift_alerts_within_one_window(models, name, feature, direction):
    X, _ = training_split(name)
    std = models[name].manifest["reference_profile"]["features"][feature]["std"]
    rng = np.random.default_rng(7)
    for _ in range(5):
        window = X.iloc[rng.integers(0, len(X), WINDOW)].copy()
        window[feature] = window[feature] + direction * 0.5 * std
        result = report(models[name], window)
        assert result["features"][feature]["status"] == "alert", result["features"][feature]
        assert result["status"] == "alert"


def test_class_prior_shift_alerts_on_the_prediction_distribution(models):
    X, y = training_split("breast-cancer")
    reference = models["breast-cancer"].manifest["reference_profile"]["prediction"]["categories"]
    assert reference["0"] == pytest.approx(0.37, abs=0.02)
    malignant, benign = np.flatnonzero(y.to_numpy() == 0), np.flatnonzero(y.to_numpy() == 1)
    rng = np.random.default_rng(11)
    for _ in range(5):
        rows = np.concatenate([rng.choice(malignant, int(0.8 * WINDOW)), rng.choice(benign, WINDOW - int(0.8 * WINDOW))])
        result = report(models["breast-cancer"], X.iloc[rows])
        prediction = result["prediction"]
        assert prediction["kind"] == "categorical"
        assert prediction["status"] == "alert", prediction
        assert prediction["current"]["frequencies"][prediction["reference"]["categories"].index("0")] > 0.7


def test_a_shifted_regression_input_moves_the_prediction_distribution(models):
    X, _ = training_split("diabetes")
    rng = np.random.default_rng(5)
    window = X.iloc[rng.integers(0, len(X), WINDOW)].copy()
    window["bmi"] = window["bmi"] + X["bmi"].std()
    prediction = report(models["diabetes"], window)["prediction"]
    assert prediction["kind"] == "numeric"
    assert prediction["status"] == "alert", prediction
