"""End to end: artifacts packaged with one store and served with another are refused until adopted.

The build host packages with store A (its own SQLite file); the artifacts are copied to a server
whose store is B. Real Gunicorn workers refuse the registry (the prediction by label and /readyz
say why), ``registry adopt --all`` with B's DATABASE_URL verifies and adopts them, and then the
same prediction is answered and ``audit verify`` passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.builders import wait_until
from tests.conftest import REPO, SCRUBBED_ENV, server_env

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
BY_LABEL = "/v1/models/diabetes/labels/production:predict"


def cli(*args: str, artifacts: Path, database_url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(ARTIFACTS_DIR=str(artifacts), DATABASE_URL=database_url, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_artifacts_from_another_store_are_refused_until_adopted_then_served_and_verified(tmp_path: Path,
                                                                                        server_factory):
    build = tmp_path / "build"
    build.mkdir()
    packaged = cli("train-demo", artifacts=build / "artifacts", database_url=f"sqlite:///{build / 'store-a.db'}",
                   cwd=build)
    assert packaged.returncode == 0, packaged.stderr
    served = tmp_path / "served" / "artifacts"
    shutil.copytree(build / "artifacts", served)  # what a release step copies to the server

    server = server_factory(served, wait="/healthz")  # store B: the server's own db-<port> file
    store_b = server_env(served, server.port)["DATABASE_URL"]
    assert store_b != f"sqlite:///{build / 'store-a.db'}"

    def refused() -> requests.Response | None:
        answer = requests.post(server.base + BY_LABEL, json={"instances": [ROW]}, timeout=30)  # fresh connection
        return answer if answer.status_code != 200 else None

    answer = refused()
    assert answer is not None and answer.status_code == 503, answer.text if answer is not None else "answered"
    error = answer.json()["error"]  # where the label points is not known while the file is refused
    assert error["code"] == "registry_unreadable" and error["details"]["label"] == "production", answer.text
    assert error["details"]["reason"].startswith("not adopted: registry.json names 1 audit record(s) of another store")
    assert [refused() is not None for _ in range(20)] == [True] * 20  # every worker refuses it
    ready = server.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["error"]["code"] == "not_ready"
    report = ready.json()["error"]["details"]["models"]["diabetes"]
    assert report["registry_code"] == "registry_unverified", report
    assert report["registry_error"].startswith("not adopted:"), report
    refusals = [r for r in server.log_records() if r.get("model") == "diabetes" and r.get("level") == "error"
                and str(r.get("reason", "")).startswith("not adopted:")]
    assert refusals and {r["fix"] for r in refusals} == {  # the log says what to run, not "restore" or "accept"
        "`python -m service registry adopt diabetes` verifies the artifacts and adopts them"}

    adopted = cli("registry", "adopt", "--all", "--reason", "copied from the build host", artifacts=served,
                  database_url=store_b, cwd=tmp_path)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "adopted 2 model(s)" in adopted.stdout and "sha256 only" in adopted.stdout, adopted.stdout

    def answered_by_every_worker() -> bool:  # each polls the file on its own (REGISTRY_POLL_SECONDS=1)
        answers = [requests.post(server.base + BY_LABEL, json={"instances": [ROW]}, timeout=30) for _ in range(20)]
        return all(a.status_code == 200 and a.headers["X-Model-Version"] == "1" for a in answers)

    wait_until(answered_by_every_worker, 30, interval=0.5, message="every worker to answer from the adopted file")
    assert server.get("/readyz").status_code == 200

    verified = cli("audit", "verify", artifacts=served, database_url=store_b, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit chain intact" in verified.stdout
    checked = cli("registry", "check", artifacts=served, database_url=store_b, cwd=tmp_path)
    assert checked.returncode == 0 and checked.stdout.split() == ["breast-cancer:", "ok", "diabetes:", "ok"], (
        checked.stdout + checked.stderr)
