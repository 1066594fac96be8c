"""The models the bench serves: the two demo models plus a forest and a boosted model it trains.

The RandomForest (100 trees) and HistGradientBoosting classifiers are fitted on 20 features
from ``make_classification`` with a fixed seed, then packaged with the project's own
``package_model`` (hold-out evaluation, reference profile and, when the exporter can convert
them, the ONNX file) and recorded in the registry, so the server treats them exactly like a
user's model. Everything is written under the bench's scratch folder, never ``artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import train_test_split

from service.models import registry
from service.models.demo import train_demo
from service.models.packaging import package_model

SEED = 1234
FEATURES = 20
SAMPLES = 4_000
FOREST, BOOSTED = "random-forest", "hist-gb"


def synthetic_data() -> tuple[pd.DataFrame, pd.Series]:
    """20 informative-and-noise features, two classes; named columns so the models keep their names."""
    X, y = make_classification(n_samples=SAMPLES, n_features=FEATURES, n_informative=10, n_redundant=4,
                               random_state=SEED)
    return pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(FEATURES)]), pd.Series(y, name="label")


def estimators() -> dict[str, object]:
    """Fresh, seeded estimators; n_jobs=1 because a Gunicorn worker is one core's worth of work."""
    return {FOREST: RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=SEED),
            BOOSTED: HistGradientBoostingClassifier(random_state=SEED)}


def train_all(root: Path, *, pmml: bool = False) -> dict[str, pd.DataFrame]:
    """Train and package every bench model into ``root``; return the synthetic models' feature table.

    ``pmml`` also stores each model's parity-checked PMML export (slow: Java starts twice per model).
    """
    train_demo(root, pmml=pmml)
    X, y = synthetic_data()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=SEED, stratify=y)
    for name, model in estimators().items():
        model.fit(X_train, y_train)
        manifest = package_model(model, name, root, X_test, y_test, description=f"bench model ({name})",
                                 changelog="Trained by python -m bench.", reference=X_train,
                                 training_data={"source": "make_classification", "rows": len(X_train), "seed": SEED},
                                 pmml=pmml)
        registry.record_packaged(root, manifest, actor="bench")
    return {FOREST: X, BOOSTED: X}
