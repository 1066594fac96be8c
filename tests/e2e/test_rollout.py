"""End to end: promotion, canary, shadow, fallback and automatic rollback on a live server."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pandas as pd
import pytest
import requests

from service.models import artifacts, registry
from service.models.packaging import package_model
from tests.e2e.test_faults import copy_as_version, flip_byte
from tests.faulty_models import TRIGGER, RaisingRegressor, SlowRegressor, SumRegressor

pytestmark = pytest.mark.e2e

ROW = [[1.0] * 30]


@pytest.fixture
def three_versions(artifact_root):
    """breast-cancer versions 1, 2, 3 (the same model under three numbers; X-Model-Version tells them apart)."""
    for number in (2, 3):
        copy_as_version(artifact_root, "breast-cancer", 1, number)
    return artifact_root


@pytest.fixture
def fragile(tmp_path):
    """Model "fragile": v1 never fails, v2 raises on TRIGGER, v3 takes 0.5 s per call."""
    root = tmp_path / "fragile-artifacts"
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    for model in (SumRegressor(), RaisingRegressor(), SlowRegressor(0.5)):
        manifest = package_model(model.fit(X.to_numpy(), y), "fragile", root, X, y)
        registry.record_packaged(root, manifest, actor="test")
    return root


def admin(server, method: str, path: str, **body) -> requests.Response:
    return server.session.request(method, server.base + path, json=body or None, timeout=30)


def test_hot_changes_under_load_drop_nothing(three_versions, server_factory):
    server = server_factory(three_versions, WEB_CONCURRENCY="3", REGISTRY_POLL_SECONDS="0.5")
    # (time, versions that may answer from then on); lag covers the workers' polling
    timeline: list[tuple[float, set[int]]] = [(0.0, {1})]
    results: list[tuple[float, float, int, str | None]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                response = session.post(server.base + "/v1/models/breast-cancer:predict", timeout=10,
                                        json={"instances": ROW}, headers={"X-Routing-Key": f"user-{seed}-{i % 50}"})
                results.append((started, time.monotonic(), response.status_code, response.headers.get("X-Model-Version")))
                i += 1
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()

    def change(method: str, path: str, allowed: set[int], **body) -> None:
        response = admin(server, method, path, **body)
        assert response.status_code == 200, response.text
        timeline.append((time.monotonic(), allowed))
        time.sleep(1.5)

    try:
        time.sleep(1.0)
        change("PUT", "/v1/models/breast-cancer/rollout", {1, 2}, canary={"version": 2, "weight": 10}, reason="try 2")
        change("PUT", "/v1/models/breast-cancer/rollout", {1, 2}, canary={"version": 2, "weight": 60})
        change("POST", "/v1/models/breast-cancer:promote", {2}, reason="2 is good")
        change("POST", "/v1/models/breast-cancer:rollback", {1}, reason="back to 1")
        change("PUT", "/v1/models/breast-cancer/rollout", {1, 3}, canary={"version": 3, "weight": 30})
        change("PUT", "/v1/models/breast-cancer/rollout", {1}, canary={"version": 3, "weight": 0})
        change("PUT", "/v1/models/breast-cancer/labels/production", {3}, version=3, reason="straight to 3")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)

    lag = 1.5  # REGISTRY_POLL_SECONDS plus a refresh
    assert len(results) > 300
    assert [r for r in results if r[2] != 200] == []
    seen = {int(r[3]) for r in results}
    assert seen == {1, 2, 3}
    for started, ended, _, version in results:
        allowed = set()
        for i, (at, versions) in enumerate(timeline):
            until = timeline[i + 1][0] + lag if i + 1 < len(timeline) else float("inf")
            if at <= ended and until >= started:
                allowed |= versions
        assert int(version) in allowed, (started, version, timeline)
    history = admin(server, "GET", "/v1/models/breast-cancer/history").json()["history"]
    assert [h["action"] for h in history][-7:] == ["rollout.set", "rollout.set", "promote", "rollback", "rollout.set",
                                                   "rollout.set", "label.set"]
    assert all(h["actor"] == "open-loopback" for h in history[-7:])
    print(f"\nhot changes: {len(results)} requests, "
          f"{sum(r[2] != 200 for r in results)} non-2xx, versions seen {sorted(seen)}")


def test_canary_assignment_is_sticky_per_routing_key(three_versions, server_factory):
    server = server_factory(three_versions)
    assert admin(server, "PUT", "/v1/models/breast-cancer/rollout", canary={"version": 2, "weight": 50}).status_code == 200
    time.sleep(1.5)
    first = {}
    for key in range(40):
        body = {"instances": ROW, "parameters": {"routing_key": f"k{key}"}}
        response = server.post("/v1/models/breast-cancer:predict", json=body)
        first[key] = response.headers["X-Model-Version"]
    assert set(first.values()) == {"1", "2"}
    for key in range(40):
        again = server.post("/v1/models/breast-cancer:predict", json={"instances": ROW}, headers={"X-Routing-Key": f"k{key}"})
        assert again.headers["X-Model-Version"] == first[key]


def test_unloadable_versions_never_take_traffic(three_versions, server_factory):
    flip_byte(three_versions / "breast-cancer" / "3" / artifacts.MODEL_FILE, needle=b"\x00")
    server = server_factory(three_versions)
    refused = admin(server, "PUT", "/v1/models/breast-cancer/labels/production", version=3)
    assert refused.status_code == 409 and "sha256" in refused.json()["error"]["message"]
    refused = admin(server, "PUT", "/v1/models/breast-cancer/rollout", canary={"version": 3, "weight": 50})
    assert refused.status_code == 409
    # a replica writing registry.json directly, bypassing the checks, must not break serving either,
    # neither for workers that were running nor for workers that boot afterwards
    def point_production_at_3(state):
        state["production_stack"].append(state["labels"]["production"])
        state["labels"]["production"] = 3
        return {"action": "raw"}

    registry.update(three_versions, "breast-cancer", point_production_at_3, actor="test")
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)  # their replacements boot with production -> 3 already on disk
    server.wait_ready()
    time.sleep(1.5)
    for _ in range(10):
        response = server.post("/v1/models/breast-cancer:predict", json={"instances": ROW})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1", response.text
    status = server.get("/v1/models/breast-cancer/versions/3").json()
    assert status["status"] == "FAILED"


def test_shadow_runs_after_the_answer_and_is_compared(fragile, server_factory):
    server = server_factory(fragile)
    assert admin(server, "PUT", "/v1/models/fragile/rollout", shadow=[3, 2]).status_code == 200
    time.sleep(1.5)
    latencies = []
    for i in range(6):
        started = time.monotonic()
        row = [[TRIGGER, 1.0]] if i % 2 else [[1.0, 2.0]]
        response = server.post("/v1/models/fragile:predict", json={"instances": row})
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"
        time.sleep(0.7)  # let the slow shadow (0.5 s) finish, so every request finds an idle worker
    assert max(latencies) < 0.4, latencies  # the 0.5 s shadow never delays the live answer
    shadow = admin(server, "GET", "/v1/models/fragile/comparison").json()["shadow"]
    assert shadow["1->3"]["comparisons"] == 6 and shadow["1->3"]["mean_abs_diff"] == 0.0
    assert shadow["1->2"]["errors"] == 3 and shadow["1->2"]["comparisons"] == 6


def test_fallback_on_error_and_on_budget(fragile, server_factory):
    server = server_factory(fragile)
    assert admin(server, "PUT", "/v1/models/fragile/rollout", canary={"version": 2, "weight": 100}).status_code == 200
    time.sleep(1.5)
    failed_over = server.post("/v1/models/fragile:predict", json={"instances": [[TRIGGER, 1.0]]})
    assert failed_over.status_code == 200 and failed_over.headers["X-Model-Version"] == "1"
    assert failed_over.json()["fallback"] == {"from_version": 2, "reason": "error"}
    fine = server.post("/v1/models/fragile:predict", json={"instances": [[1.0, 1.0]]})
    assert fine.headers["X-Model-Version"] == "2" and "fallback" not in fine.json()
    assert admin(server, "PUT", "/v1/models/fragile/rollout", canary={"version": 3, "weight": 100},
                 budget_ms=100).status_code == 200
    time.sleep(1.5)
    started = time.monotonic()
    slow = server.post("/v1/models/fragile:predict", json={"instances": [[1.0, 1.0]]})
    assert time.monotonic() - started < 0.45
    assert slow.headers["X-Model-Version"] == "1" and slow.json()["fallback"]["reason"] == "timeout"
    figures = admin(server, "GET", "/v1/models/fragile/comparison").json()["versions"]
    assert figures["2"]["fallbacks_from"] == 1 and figures["3"]["fallbacks_from"] == 1


def test_a_failing_canary_is_rolled_back_automatically(fragile, server_factory):
    server = server_factory(fragile, GUARD_SECONDS="0.5")
    rules = {"min_requests": 10, "max_error_rate": 0.2, "window_seconds": 60}
    assert admin(server, "PUT", "/v1/models/fragile/rollout", canary={"version": 2, "weight": 50},
                 rules=rules, reason="risky").status_code == 200
    time.sleep(1.5)
    for i in range(60):
        response = server.post("/v1/models/fragile:predict", json={"instances": [[TRIGGER, 1.0]]},
                               headers={"X-Routing-Key": f"user-{i}"})
        assert response.status_code == 200  # failures on the canary are answered by production
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rollout = admin(server, "GET", "/v1/models/fragile/rollout").json()["rollout"]
        if rollout["canary"]["weight"] == 0:
            break
        time.sleep(0.3)
    assert rollout["canary"]["weight"] == 0
    history = admin(server, "GET", "/v1/models/fragile/history").json()["history"]
    assert history[-1]["action"] == "rollout.auto_rollback" and "error rate" in history[-1]["reason"]
    assert [r for r in server.log_records() if r.get("message") == "canary rolled back automatically"]
    time.sleep(1.5)
    versions = {server.post("/v1/models/fragile:predict", json={"instances": [[1.0, 1.0]]},
                            headers={"X-Routing-Key": f"user-{i}"}).headers["X-Model-Version"] for i in range(20)}
    assert versions == {"1"}


def test_admin_changes_need_the_admin_scope_and_valid_bodies(three_versions, server_factory, tmp_path):
    from service.security.keys import create_key

    keys = tmp_path / "keys.json"
    reader, operator = create_key(keys, "reader", ["read", "predict"]), create_key(keys, "ops", ["admin", "read"])
    server = server_factory(three_versions, API_KEYS_FILE=str(keys))
    body = {"canary": {"version": 2, "weight": 10}}
    url = server.base + "/v1/models/breast-cancer/rollout"
    assert server.session.put(url, json=body, timeout=10).status_code == 401
    assert server.session.put(url, json=body, headers={"X-API-Key": reader}, timeout=10).status_code == 403
    bad = server.session.put(url, json={"canary": {"version": 2, "weight": 150}}, headers={"X-API-Key": operator},
                             timeout=10)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["errors"][0]["field"] == "canary.weight"
    ok = server.session.put(url, json=body, headers={"X-API-Key": operator}, timeout=10)
    assert ok.status_code == 200 and ok.json()["change"]["actor"] == "key:ops"
    no_canary_yet = server.session.post(server.base + "/v1/models/diabetes:promote", headers={"X-API-Key": operator},
                                        timeout=10)
    assert no_canary_yet.status_code == 409 and no_canary_yet.json()["error"]["code"] == "change_refused"
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_a_canary_whose_live_accuracy_drops_is_rolled_back(three_versions, server_factory):
    server = server_factory(three_versions, GUARD_SECONDS="0.5")
    rules = {"min_requests": 5, "min_live_accuracy": 0.8, "window_seconds": 120}
    assert admin(server, "PUT", "/v1/models/breast-cancer/rollout", canary={"version": 2, "weight": 100},
                 rules=rules, reason="v2 on trial").status_code == 200
    time.sleep(1.5)
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer().data[:60].tolist()
    answers = [server.post("/v1/models/breast-cancer:predict", json={"instances": rows[i:i + 10]}).json()
               for i in range(0, 60, 10)]
    assert {a["version"] for a in answers} == {2}
    # ground truth says the canary is wrong every time
    feedback = [{"id": i, "label": 1 - p} for a in answers for i, p in zip(a["ids"], a["predictions"], strict=True)]
    assert server.post("/v1/models/breast-cancer/feedback", json={"feedback": feedback}).json()["accepted"] == 60
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if admin(server, "GET", "/v1/models/breast-cancer/rollout").json()["rollout"]["canary"]["weight"] == 0:
            break
        time.sleep(0.3)
    history = admin(server, "GET", "/v1/models/breast-cancer/history").json()["history"]
    assert history[-1]["action"] == "rollout.auto_rollback"
    assert history[-1]["reason"].startswith("live accuracy 0 < 0.8 over 60 labelled predictions")
