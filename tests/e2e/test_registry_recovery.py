"""End to end: a corrupt registry.json never takes a model away, across worker recycling and restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from service.models import registry
from tests.builders import wait_until
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
UNREADABLE = "registry.json unreadable; serving its last-good copy"
READABLE = "registry.json readable again"



def said(server, message: str) -> int:
    return sum(1 for r in server.log_records() if r.get("message") == message and r.get("model") == "diabetes")


def predict_40(server) -> list[tuple[int, str | None]]:
    # a fresh connection each time, so the kernel spreads them over both workers
    outcomes = []
    for _ in range(40):
        response = requests.post(server.base + "/v1/models/diabetes:predict", json={"instances": [ROW]}, timeout=30)
        outcomes.append((response.status_code, response.headers.get("X-Model-Version")))
    return outcomes


def test_a_corrupt_registry_survives_a_recycled_worker_a_restart_and_is_repaired(artifact_root, server_factory):
    folder = artifact_root / "diabetes"
    (folder / registry.LAST_GOOD_FILE).unlink()  # an install from before last-good copies existed
    server = server_factory(artifact_root, WEB_CONCURRENCY="2", REGISTRY_POLL_SECONDS="1")
    assert (folder / registry.LAST_GOOD_FILE).exists(), "the first good read did not write the copy"
    production = registry.read_state(artifact_root, "diabetes")["labels"]["production"]

    (folder / "registry.json").write_text('{"labels": {"production": ')  # a torn write by some other tool
    wait_until(lambda: said(server, UNREADABLE) == 2, 30, message="both workers to notice the broken file")
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 30, message="a replacement worker")
    wait_until(lambda: said(server, UNREADABLE) == 3, 30, message="the replacement to boot over the broken file")

    assert predict_40(server) == [(200, str(production))] * 40
    ready = server.get("/readyz")
    assert ready.status_code == 200
    report = ready.json()["models"]["diabetes"]
    assert report["registry"] == "last-good" and report["registry_error"].startswith("registry.json is not valid")
    assert str(artifact_root) not in ready.text

    server.stop()
    server = server_factory(artifact_root, WEB_CONCURRENCY="2", REGISTRY_POLL_SECONDS="1")
    assert predict_40(server) == [(200, str(production))] * 40
    assert server.get("/readyz").json()["models"]["diabetes"]["registry"] == "last-good"

    # the operator's CLI uses the server's database: the restore is anchored in the same audit trail
    database = artifact_root.parent / f"db-{server.port}" / "predictions.db"
    restored = subprocess.run([sys.executable, "-m", "service", "registry", "restore", "diabetes",
                               "--artifacts-dir", str(artifact_root), "--reason", "torn write"],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "DATABASE_URL": f"sqlite:///{database}"})
    assert restored.returncode == 0, restored.stderr
    wait_until(lambda: said(server, READABLE) == 2, 30, message="both workers to pick up the repaired file")
    for _ in range(10):
        ready = server.get("/readyz")
        assert ready.status_code == 200 and "registry_error" not in ready.json()["models"]["diabetes"]
    history = server.get("/v1/models/diabetes/history").json()["history"]
    assert history[-1]["action"] == "registry.restore" and history[-1]["reason"] == "torn write"
