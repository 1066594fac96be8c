"""End to end: promotions, rollbacks and canary changes under load reach every Gunicorn worker and drop nothing.

Stickiness, shadows, fallback, automatic rollback and the admin API's checks are tested
in-process in tests/api/test_rollout.py; here, what needs several workers polling one registry.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from service.security.keys import create_key
from tests.builders import copy_version, wait_until

pytestmark = pytest.mark.e2e

ROW = [[1.0] * 30]
LAG = 1.5  # seconds a change may take to reach every worker: REGISTRY_POLL_SECONDS (0.5) plus a refresh
SETTLED = 40  # answers after a change, the latest all from allowed versions: it reached every worker


@pytest.fixture
def three_versions(artifact_root):
    """breast-cancer versions 1, 2, 3 (the same model under three numbers; X-Model-Version tells them apart)."""
    for number in (2, 3):
        copy_version(artifact_root, "breast-cancer", 1, number)
    return artifact_root


def test_hot_changes_under_load_drop_nothing(three_versions, server_factory, tmp_path):
    keys = tmp_path / "keys.json"
    operator = create_key(keys, "ops", ["admin", "read", "predict"])
    server = server_factory(three_versions, WEB_CONCURRENCY="3", REGISTRY_POLL_SECONDS="0.5", API_KEYS_FILE=str(keys))
    server.session.headers["X-API-Key"] = operator
    # (time, versions that may answer from then on); LAG covers the workers' polling
    timeline: list[tuple[float, set[int]]] = [(0.0, {1})]
    results: list[tuple[float, float, int, str | None]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                response = session.post(server.base + "/v1/models/breast-cancer:predict", timeout=10,
                                        json={"instances": ROW}, headers={"X-Routing-Key": f"user-{seed}-{i % 50}",
                                                                          "X-API-Key": operator})
                results.append((started, time.monotonic(), response.status_code, response.headers.get("X-Model-Version")))
                i += 1
                stop.wait(0.01)  # pacing, so three clients leave the 2-core machine some room

    def settled(at: float, allowed: set[int]) -> bool:
        """At least SETTLED answers since the change, every allowed version among them, the latest all allowed."""
        since = [int(r[3]) for r in list(results) if r[0] > at and r[2] == 200]
        return len(since) >= SETTLED and set(since) >= allowed and set(since[-SETTLED:]) <= allowed

    def change(method: str, path: str, allowed: set[int], **body) -> None:
        response = server.session.request(method, server.base + path, json=body, timeout=30)
        assert response.status_code == 200, response.text
        at = time.monotonic()
        timeline.append((at, allowed))
        wait_until(lambda: settled(at, allowed), timeout=20, interval=0.1, message=f"{method} {path} -> {allowed}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(results) >= SETTLED, timeout=20, message="traffic flowing")
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

    assert len(results) >= SETTLED * len(timeline)  # load through every change (settled() waits for it)
    assert [r for r in results if r[2] != 200] == []
    seen = {int(r[3]) for r in results}
    assert seen == {1, 2, 3}
    for started, ended, _, version in results:
        allowed = set()
        for i, (at, versions) in enumerate(timeline):
            until = timeline[i + 1][0] + LAG if i + 1 < len(timeline) else float("inf")
            if at <= ended and until >= started:
                allowed |= versions
        assert int(version) in allowed, (started, version, timeline)
    history = server.get("/v1/models/breast-cancer/history").json()["history"]
    assert [h["action"] for h in history][-7:] == ["rollout.set", "rollout.set", "promote", "rollback", "rollout.set",
                                                   "rollout.set", "label.set"]
    assert all(h["actor"] == "key:ops" for h in history[-7:])
    print(f"\nhot changes: {len(results)} requests, "
          f"{sum(r[2] != 200 for r in results)} non-2xx, versions seen {sorted(seen)}")
