"""End to end: the master loads the model versions before it forks and the workers serve its copies.

Each worker logs ``model version loaded`` per version with ``before_fork``: true when it took the
master's copy (no unpickling, no session of its own), false when it loaded the version itself.
"""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.builders import copy_version, flip_byte, wait_until
from tests.e2e.test_exits import abort_lines

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
LOADED = "model version loaded"


def loads(server) -> list[tuple[str, int, bool]]:
    return [(r["model"], r["version"], r["before_fork"]) for r in server.log_records() if r.get("message") == LOADED]


def held(server) -> list[int]:
    return [r["versions"] for r in server.log_records() if r.get("message") == "model versions loaded before fork"]


def test_workers_serve_the_masters_models_and_load_only_what_came_after_the_fork(artifact_root, server_factory):
    server = server_factory(artifact_root)
    assert held(server) == [2]  # both demo models, once, in the master
    assert len(os.listdir(f"/proc/{server.proc.pid}/task")) == 1  # the sessions it opened started no thread
    wait_until(lambda: len(loads(server)) == 4, message="two workers each report both versions")
    assert sorted(loads(server)) == sorted(2 * [("breast-cancer", 1, True), ("diabetes", 1, True)])
    for _ in range(10):  # fresh connections reach both workers; the shared ONNX session answers in each
        response = requests.post(server.base + "/v1/models/diabetes:predict", json={"instances": [ROW]}, timeout=30)
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"

    copy_version(artifact_root, "diabetes", 1, 2)  # a version the master never saw: each worker loads it
    wait_until(lambda: [v for v in loads(server) if v[:2] == ("diabetes", 2)] == 2 * [("diabetes", 2, False)],
               message="both workers loaded version 2 themselves")
    response = requests.post(server.base + "/v1/models/diabetes/versions/2:predict", json={"instances": [ROW]}, timeout=30)
    assert response.status_code == 200

    before = len(loads(server))
    server.proc.send_signal(signal.SIGHUP)  # the master loads version 2 too; the new workers take both
    wait_until(lambda: len(loads(server)) == before + 6, timeout=30, message="two new workers report three versions")
    assert held(server) == [2, 3]
    assert all(shared for _, _, shared in loads(server)[before:])
    assert len(os.listdir(f"/proc/{server.proc.pid}/task")) == 1
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=40) == 0
    assert abort_lines(server.log_path) == []


def test_a_version_altered_after_the_master_loaded_it_is_refused_by_the_workers(artifact_root, server_factory):
    server = server_factory(artifact_root, WEB_CONCURRENCY="1", WORKER_MAX_REQUESTS="5")
    assert held(server) == [2]
    flip_byte(artifact_root / "diabetes" / "1" / "model.joblib")  # the master still holds the verified bytes
    boots = server.log_path.read_text().count("Booting worker with pid")
    for _ in range(8):  # recycles the worker: its replacement verifies the files again before taking the copy
        requests.get(server.base + "/healthz", timeout=30)
    wait_until(lambda: server.log_path.read_text().count("Booting worker with pid") > boots, timeout=30,
               message="the worker was recycled")
    wait_until(lambda: any(r.get("message") == "model version refused" and r.get("model") == "diabetes"
                           for r in server.log_records()), timeout=30, message="the new worker refused diabetes 1")
    response = requests.post(server.base + "/v1/models/diabetes:predict", json={"instances": [ROW]}, timeout=30)
    assert response.status_code == 503
