"""Attack, end to end on real Gunicorn: someone with write access to artifacts/ moves the production
label by editing registry.json. The servers refuse the edit (it does not match the audit trail),
keep serving the verified version, say why on /readyz and record the refusal once; the operator
resolves it with the CLI, and changes through the tools are accepted throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from service.models import registry
from service.models.registry_anchor import REFUSED
from service.security import audit
from service.security.keys import create_key
from service.store import Store
from tests.builders import copy_version, wait_until
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

MODEL = "breast-cancer"
ROW = [1.0] * 30  # the demo classifier's 30 features
REFUSED_LOG = "registry.json refused: it does not match the audit trail; serving its last-good copy"
READABLE_LOG = "registry.json readable again"



def database(root: Path, server) -> Path:
    return root.parent / f"db-{server.port}" / "predictions.db"  # where tests.conftest.server_env puts it


def cli(root: Path, server, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m service`` as the operator does on the server: same artifacts, same database."""
    env = {**os.environ, "ARTIFACTS_DIR": str(root), "DATABASE_URL": f"sqlite:///{database(root, server)}"}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def said(server, message: str) -> int:
    return sum(1 for r in server.log_records() if r.get("message") == message and r.get("model") == MODEL)


def served_versions(server, n: int = 30) -> set[tuple[int, str | None]]:
    outcomes = set()
    for _ in range(n):  # a fresh connection each time, so both workers answer
        response = requests.post(f"{server.base}/v1/models/{MODEL}:predict", json={"instances": [ROW]}, timeout=30,
                                 headers={"X-API-Key": server.session.headers["X-API-Key"]})
        outcomes.add((response.status_code, response.headers.get("X-Model-Version")))
    return outcomes


def audit_records(root: Path, server, action: str) -> list[audit.AuditRecord]:
    store = Store(database(root, server))
    try:
        return audit.find(store, action)
    finally:
        store.close()


def test_an_edited_production_label_is_refused_until_the_operator_resolves_it(artifact_root, server_factory,
                                                                             tmp_path):
    copy_version(artifact_root, MODEL, 1, 2)
    keys = tmp_path / "keys.json"
    operator = create_key(keys, "ops", ["admin", "read", "predict"])
    server = server_factory(artifact_root, WEB_CONCURRENCY="2", REGISTRY_POLL_SECONDS="0.5", API_KEYS_FILE=str(keys))
    server.session.headers["X-API-Key"] = operator
    assert served_versions(server) == {(200, "1")}

    # the attack: production moved to version 2 by editing the file
    path = artifact_root / MODEL / "registry.json"
    state = json.loads(path.read_text())
    state["labels"]["production"] = 2
    path.write_text(json.dumps(state, indent=2))
    wait_until(lambda: said(server, REFUSED_LOG) == 2, 30, message="both workers to refuse the edited file")

    assert served_versions(server) == {(200, "1")}  # the verified state, not the edit
    ready = server.get("/readyz")  # a probe: the code, not the message
    assert ready.status_code == 200
    assert ready.json()["models"][MODEL] == {"status": "AVAILABLE", "registry": "last-good",
                                             "registry_code": "registry_unverified"}
    blocked = server.session.put(f"{server.base}/v1/models/{MODEL}/labels/staging", json={"version": 2}, timeout=30)
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "registry_unreadable"
    assert len(audit_records(artifact_root, server, REFUSED)) == 1  # once, not per poll per worker
    checked = cli(artifact_root, server, "registry", "check", MODEL)
    assert checked.returncode == 1 and "does not match the audit trail" in checked.stdout
    assert "registry restore" in checked.stdout and "registry accept" in checked.stdout

    # the operator undoes it; labels change through the API and the CLI, with no false alarm
    restored = cli(artifact_root, server, "registry", "restore", MODEL, "--reason", "not ours")
    assert restored.returncode == 0, restored.stderr
    wait_until(lambda: said(server, READABLE_LOG) == 2, 30, message="both workers to take the restored file")
    changed = server.session.put(f"{server.base}/v1/models/{MODEL}/labels/staging", json={"version": 2}, timeout=30)
    assert changed.status_code == 200, changed.text
    labelled = cli(artifact_root, server, "label", "set", MODEL, "production", "2", "--reason", "release")
    assert labelled.returncode == 0, labelled.stderr
    wait_until(lambda: served_versions(server, 10) == {(200, "2")}, 30, message="both workers to serve the new production")
    assert "registry_error" not in server.get("/readyz").json()["models"][MODEL]
    assert len(audit_records(artifact_root, server, REFUSED)) == 1 and said(server, REFUSED_LOG) == 2
    assert cli(artifact_root, server, "audit", "verify").returncode == 0
    assert registry.read_state(artifact_root, MODEL)["labels"] == {"production": 2, "staging": 2}

