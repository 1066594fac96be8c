"""Explanations never stall the default server: two sync workers, a 100-tree forest, /healthz probed every 200 ms."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from bench.explain_stall import scenario
from bench.models import FOREST, SEED, estimators, synthetic_data
from service.models import registry
from service.models.packaging import package_model

pytestmark = pytest.mark.e2e

#: Generous against a shared machine: the slowest probe measured 0.04 s (python -m bench.explain_stall).
PROBE_LIMIT_SECONDS = 1.0


@pytest.fixture(scope="module")
def forest_root(tmp_path_factory):
    """The bench's RandomForest(100), packaged and labelled production."""
    root = tmp_path_factory.mktemp("forest") / "artifacts"
    X, y = synthetic_data()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=SEED, stratify=y)
    model = estimators()[FOREST].fit(X_train, y_train)
    registry.record_packaged(root, package_model(model, FOREST, root, X_test, y_test, reference=X_train), actor="test")
    return root, X


def test_two_big_explanations_leave_health_answering_and_those_within_the_limit_add_up(forest_root, server_factory):
    root, X = forest_root
    server = server_factory(root)  # the defaults: WEB_CONCURRENCY=2, THREADS=1 (sync workers)
    limits = {server.get(f"/v1/models/{FOREST}/versions/1").json()["explanations"]["max_rows"] for _ in range(6)}
    assert len(limits) == 1, f"the workers disagree on the row limit: {limits}"
    limit = limits.pop()
    assert 1 <= limit < 1000

    rows = X.head(1000).to_numpy().tolist()
    result = scenario(server.base, FOREST, rows, 1000, rounds=3)

    assert result["healthz_probes"] >= 1 and result["healthz_max_s"] < PROBE_LIMIT_SECONDS, result["healthz_max_s"]
    for call in result["big"]:
        assert call["status"] == 422 and call["seconds"] < PROBE_LIMIT_SECONDS
        details = call["body"]["error"]["details"]
        assert call["body"]["error"]["code"] == "too_many_rows_to_explain"
        assert (details["rows"], details["max_rows"], details["limited_by"]) == (1000, limit, "EXPLAIN_MAX_SECONDS")
    for pair in result["at_limit"]:
        for call in pair:
            assert call["status"] == 200, call["body"]
            body = call["body"]
            assert body["explanation"] == {"method": "tree_shap", "output": "probability", "exact": True, "class": 1}
            totals = [item["base"] + sum(item["contributions"].values()) for item in body["explanations"]]
            np.testing.assert_allclose(totals, [p[1] for p in body["probabilities"]], atol=1e-6)
            assert len(totals) == limit
