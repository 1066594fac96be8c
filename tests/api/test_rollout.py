"""Canary, shadow, fallback, automatic rollback and the admin API through the HTTP shell, in-process.

What needs several Gunicorn workers (hot changes under load, picked up by every worker's
polling) stays in tests/e2e/test_rollout.py. Admin calls here carry an admin key, as they must.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from service.models import artifacts, registry
from service.models.packaging import package_model
from service.security.keys import create_key
from tests.builders import copy_version, wait_until
from tests.faulty_models import TRIGGER, RaisingRegressor, SlowRegressor, SumRegressor

ROW = [[1.0] * 30]


@pytest.fixture
def keys(tmp_path):
    """A keys file with an operator key (every scope) and a reader (read, predict)."""
    path = tmp_path / "keys.json"
    return path, create_key(path, "ops", ["admin", "read", "predict"]), create_key(path, "reader", ["read", "predict"])


@pytest.fixture
def three_versions(artifact_root):
    """breast-cancer versions 1, 2, 3 (the same model under three numbers; X-Model-Version tells them apart)."""
    for number in (2, 3):
        copy_version(artifact_root, "breast-cancer", 1, number)
    return artifact_root


@pytest.fixture(scope="module")
def fragile_template(tmp_path_factory):
    """Model "fragile": v1 never fails, v2 raises on TRIGGER, v3 takes 0.5 s per call; packaged once."""
    root = tmp_path_factory.mktemp("fragile") / "artifacts"
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    for model in (SumRegressor(), RaisingRegressor(), SlowRegressor(0.5)):
        manifest = package_model(model.fit(X.to_numpy(), y), "fragile", root, X, y)
        registry.record_packaged(root, manifest, actor="test")
    return root


@pytest.fixture
def fragile(fragile_template, tmp_path):
    """A copy of the fragile model's root for one test to change."""
    return Path(shutil.copytree(fragile_template, tmp_path / "fragile-artifacts"))


@pytest.fixture
def operator(make_app, keys):
    """``operator(root, **config)``: a test client for an app over ``root`` whose every call carries the ops key."""

    def build(root, **config):
        client = make_app(artifacts_dir=root, api_keys_file=keys[0], **config).test_client()
        client.environ_base["HTTP_X_API_KEY"] = keys[1]
        return client

    return build


def admin(client, method: str, path: str, **body):
    return client.open(path, method=method, json=body)


def rollout(client, name: str) -> dict:
    return admin(client, "GET", f"/v1/models/{name}/rollout").get_json()["rollout"]


def test_canary_assignment_is_sticky_per_routing_key(three_versions, operator):
    client = operator(three_versions)
    assert admin(client, "PUT", "/v1/models/breast-cancer/rollout", canary={"version": 2, "weight": 50}).status_code == 200
    first = {}
    for key in range(40):
        body = {"instances": ROW, "parameters": {"routing_key": f"k{key}"}}
        first[key] = client.post("/v1/models/breast-cancer:predict", json=body).headers["X-Model-Version"]
    assert set(first.values()) == {"1", "2"}
    for key in range(40):
        again = client.post("/v1/models/breast-cancer:predict", json={"instances": ROW}, headers={"X-Routing-Key": f"k{key}"})
        assert again.headers["X-Model-Version"] == first[key]


def _corrupt(path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[data.index(b"\x00") + 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_unloadable_versions_never_take_traffic(three_versions, operator):
    _corrupt(three_versions / "breast-cancer" / "3" / artifacts.MODEL_FILE)
    client = operator(three_versions)
    refused = admin(client, "PUT", "/v1/models/breast-cancer/labels/production", version=3)
    assert refused.status_code == 409 and "sha256" in refused.get_json()["error"]["message"]
    refused = admin(client, "PUT", "/v1/models/breast-cancer/rollout", canary={"version": 3, "weight": 50})
    assert refused.status_code == 409

    # a replica writing registry.json directly, bypassing the checks, must not break serving either,
    # neither for a worker that was running (its next poll) nor for one that boots afterwards
    def point_production_at_3(state):
        state["production_stack"].append(state["labels"]["production"])
        state["labels"]["production"] = 3
        return {"action": "raw"}

    registry.update(three_versions, "breast-cancer", point_production_at_3, actor="test")
    client.application.extensions["catalog"].refresh()  # what the running worker's poll does
    booted = operator(three_versions)
    for worker in (client, booted):
        for _ in range(10):
            response = worker.post("/v1/models/breast-cancer:predict", json={"instances": ROW})
            assert response.status_code == 200 and response.headers["X-Model-Version"] == "1", response.get_data()
        assert worker.get("/v1/models/breast-cancer/versions/3").get_json()["status"] == "FAILED"


def shadow_figures(client) -> dict:
    return admin(client, "GET", "/v1/models/fragile/comparison").get_json()["shadow"]


def test_shadow_runs_after_the_answer_and_is_compared(fragile, operator):
    client = operator(fragile)
    assert admin(client, "PUT", "/v1/models/fragile/rollout", shadow=[3, 2]).status_code == 200
    latencies = []
    for i in range(6):
        started = time.monotonic()
        row = [[TRIGGER, 1.0]] if i % 2 else [[1.0, 2.0]]
        response = client.post("/v1/models/fragile:predict", json={"instances": row})
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"
        # the slow shadow (0.5 s) has finished before the next request: none is dropped for a full queue
        wait_until(lambda i=i: shadow_figures(client).get("1->3", {}).get("comparisons") == i + 1, timeout=10,
                   message=f"shadow comparison {i + 1}")
    assert max(latencies) < 0.4, latencies  # the 0.5 s shadow never delays the live answer
    shadow = wait_until(lambda: (s := shadow_figures(client))["1->2"].get("comparisons") == 6 and s, timeout=10)
    assert shadow["1->3"]["comparisons"] == 6 and shadow["1->3"]["mean_abs_diff"] == 0.0
    assert shadow["1->2"]["errors"] == 3 and shadow["1->2"]["comparisons"] == 6


def test_fallback_on_error_and_on_budget(fragile, operator):
    client = operator(fragile)
    assert admin(client, "PUT", "/v1/models/fragile/rollout", canary={"version": 2, "weight": 100}).status_code == 200
    failed_over = client.post("/v1/models/fragile:predict", json={"instances": [[TRIGGER, 1.0]]})
    assert failed_over.status_code == 200 and failed_over.headers["X-Model-Version"] == "1"
    assert failed_over.get_json()["fallback"] == {"from_version": 2, "reason": "error"}
    fine = client.post("/v1/models/fragile:predict", json={"instances": [[1.0, 1.0]]})
    assert fine.headers["X-Model-Version"] == "2" and "fallback" not in fine.get_json()
    assert admin(client, "PUT", "/v1/models/fragile/rollout", canary={"version": 3, "weight": 100},
                 budget_ms=100).status_code == 200
    started = time.monotonic()
    slow = client.post("/v1/models/fragile:predict", json={"instances": [[1.0, 1.0]]})
    assert time.monotonic() - started < 0.45
    assert slow.headers["X-Model-Version"] == "1" and slow.get_json()["fallback"]["reason"] == "timeout"

    def both_counted():
        figures = admin(client, "GET", "/v1/models/fragile/comparison").get_json()["versions"]
        return figures.get("2", {}).get("fallbacks_from") == 1 and figures.get("3", {}).get("fallbacks_from") == 1

    wait_until(both_counted, timeout=10, message="fallbacks recorded")


def test_a_failing_canary_is_rolled_back_automatically(fragile, operator, caplog):
    client = operator(fragile, guard_seconds=0.1, poll_seconds=0.1)
    rules = {"min_requests": 10, "max_error_rate": 0.2, "window_seconds": 60}
    assert admin(client, "PUT", "/v1/models/fragile/rollout", canary={"version": 2, "weight": 50},
                 rules=rules, reason="risky").status_code == 200
    for i in range(60):
        response = client.post("/v1/models/fragile:predict", json={"instances": [[TRIGGER, 1.0]]},
                               headers={"X-Routing-Key": f"user-{i}"})
        assert response.status_code == 200  # failures on the canary are answered by production
    wait_until(lambda: rollout(client, "fragile")["canary"]["weight"] == 0, timeout=10, message="canary at weight 0")
    history = admin(client, "GET", "/v1/models/fragile/history").get_json()["history"]
    assert history[-1]["action"] == "rollout.auto_rollback" and "error rate" in history[-1]["reason"]
    # the guard logs just after it writes the registry: wait for the line rather than race it
    wait_until(lambda: [r for r in caplog.records if r.getMessage() == "canary rolled back automatically"],
               timeout=10, message="rollback logged")

    def served_by_production_only():
        return {client.post("/v1/models/fragile:predict", json={"instances": [[1.0, 1.0]]},
                            headers={"X-Routing-Key": f"user-{i}"}).headers["X-Model-Version"] for i in range(20)} == {"1"}

    wait_until(served_by_production_only, timeout=10, message="the poll saw the rollback")


def test_admin_changes_need_the_admin_scope_and_valid_bodies(three_versions, operator, keys):
    client = operator(three_versions)
    body = {"canary": {"version": 2, "weight": 10}}
    url = "/v1/models/breast-cancer/rollout"
    assert client.put(url, json=body, environ_base={"HTTP_X_API_KEY": ""}).status_code == 401
    assert client.put(url, json=body, headers={"X-API-Key": keys[2]}).status_code == 403
    bad = client.put(url, json={"canary": {"version": 2, "weight": 150}})
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["errors"][0]["field"] == "canary.weight"
    ok = client.put(url, json=body)
    assert ok.status_code == 200 and ok.get_json()["change"]["actor"] == "key:ops"
    no_canary_yet = client.post("/v1/models/diabetes:promote", json={})
    assert no_canary_yet.status_code == 409 and no_canary_yet.get_json()["error"]["code"] == "change_refused"
    history = admin(client, "GET", "/v1/models/breast-cancer/history").get_json()["history"]
    assert history[-1]["action"] == "rollout.set" and history[-1]["actor"] == "key:ops"


def test_a_canary_whose_live_accuracy_drops_is_rolled_back(three_versions, operator):
    client = operator(three_versions, guard_seconds=0.1)
    rules = {"min_requests": 5, "min_live_accuracy": 0.8, "window_seconds": 120}
    assert admin(client, "PUT", "/v1/models/breast-cancer/rollout", canary={"version": 2, "weight": 100},
                 rules=rules, reason="v2 on trial").status_code == 200
    rows = load_breast_cancer().data[:60].tolist()
    answers = [client.post("/v1/models/breast-cancer:predict", json={"instances": rows[i:i + 10]}).get_json()
               for i in range(0, 60, 10)]
    assert {a["version"] for a in answers} == {2}
    # ground truth says the canary is wrong every time
    feedback = [{"id": i, "label": 1 - p} for a in answers for i, p in zip(a["ids"], a["predictions"], strict=True)]

    def logged() -> bool:  # predictions are logged just after each answer: feedback must find them
        versions = client.get("/v1/models/breast-cancer/monitoring").get_json()["versions"]
        return versions.get("2", {}).get("n") == 60

    wait_until(logged, timeout=10, message="60 predictions logged")
    assert client.post("/v1/models/breast-cancer/feedback", json={"feedback": feedback}).get_json()["accepted"] == 60
    wait_until(lambda: rollout(client, "breast-cancer")["canary"]["weight"] == 0, timeout=15,
               message="canary at weight 0")
    history = admin(client, "GET", "/v1/models/breast-cancer/history").get_json()["history"]
    assert history[-1]["action"] == "rollout.auto_rollback"
    assert history[-1]["reason"].startswith("live accuracy 0 < 0.8 over 60 labelled predictions")

