"""The prediction path without HTTP: routing, validation, fallback, and what observers record."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from service.models import registry
from service.models.packaging import package_model
from service.monitoring.observe import Observer
from service.protocols import v1
from service.serving import inference
from service.serving.catalog import Catalog
from service.serving.inference import Limits, Target
from service.store import Store
from tests.faulty_models import TRIGGER, RaisingRegressor, SumRegressor

LIMITS = Limits(max_rows=1000, vectorized_min_rows=64)


def predict(catalog, payload, target):
    """Predict through the v1 codec, as the HTTP layer does."""
    return inference.predict(catalog, v1.decode(payload, target, max_rows=LIMITS.max_rows), LIMITS)


@pytest.fixture
def string_classes(tmp_path):
    X = pd.DataFrame({"a": np.linspace(0, 1, 40), "b": np.linspace(1, 0, 40)})
    y = np.where(X["a"] > 0.5, "high", "low")
    model = LogisticRegression().fit(X, y)
    manifest = package_model(model, "strings", tmp_path, X, pd.Series(y))
    registry.record_packaged(tmp_path, manifest, actor="test")
    catalog = Catalog(tmp_path)
    catalog.refresh()
    return catalog, model, X


def test_string_classes_come_back_as_json_strings(string_classes):
    catalog, model, X = string_classes
    payload = {"instances": X.head(3).to_numpy().tolist(), "parameters": {"probabilities": True}}
    answer = predict(catalog, payload, Target("strings"))
    body = orjson.loads(orjson.dumps(v1.encode(answer), option=orjson.OPT_SERIALIZE_NUMPY))
    assert body["predictions"] == model.predict(X.head(3)).tolist()
    assert body["classes"] == ["high", "low"]


@pytest.fixture
def fragile(tmp_path):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.1, 0.2]})
    y = pd.Series([1.5, 2.1, 3.2])
    for model in (SumRegressor(), RaisingRegressor()):
        registry.record_packaged(tmp_path, package_model(model.fit(X.to_numpy(), y), "fragile", tmp_path, X, y),
                                 actor="test")
    registry.set_rollout(tmp_path, "fragile", canary={"version": 2, "weight": 100}, actor="test")
    catalog = Catalog(tmp_path)
    catalog.refresh()
    return catalog


def test_a_failing_canary_falls_back_and_says_so(fragile):
    answer = predict(fragile, {"instances": [[TRIGGER, 1.0]]}, Target("fragile"))
    assert answer.version == 1 and answer.role == "fallback" and answer.fallback_from == 2
    assert v1.encode(answer)["fallback"] == {"from_version": 2, "reason": "error"}
    healthy = predict(fragile, {"instances": [[1.0, 1.0]]}, Target("fragile"))
    assert healthy.version == 2 and healthy.role == "canary" and "fallback" not in v1.encode(healthy)


def test_the_observer_records_answers_and_failures_with_their_status(fragile, tmp_path):
    store = Store(tmp_path / "db.sqlite")
    observer = Observer(store)
    answer = predict(fragile, {"instances": [[TRIGGER, 1.0]]}, Target("fragile"))
    observer.answered(answer, "req-1")
    observer.failed(Target("fragile"), "req-2", 422, "validation_failed", 0.001, None)
    observer.close()
    rows = {r["request_id"]: dict(r) for r in store.requests_since("fragile", 0)}
    assert rows["req-1"]["status"] == 200 and rows["req-1"]["fallback_from"] == 2 and rows["req-1"]["version"] == 1
    assert orjson.loads(rows["req-1"]["summary"])["n"] == 1
    assert rows["req-2"]["status"] == 422 and rows["req-2"]["error"] == "validation_failed"
