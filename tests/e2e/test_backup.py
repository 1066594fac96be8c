"""End to end: a deployment served by real Gunicorn is backed up while a client keeps predicting,
wiped, restored into a fresh folder and another store (SQLite, then PostgreSQL), and started again:
same labels and versions, `audit verify` and `registry check` pass, the same predictions, feedback
and alert states. A backup with one byte changed in its store copy is refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sklearn.datasets import load_breast_cancer

from service.backup import pinned
from service.security import checkpoint
from service.store import Store
from tests.builders import copy_version, flip_byte, package_with_subject, wait_until
from tests.conftest import REPO, SCRUBBED_ENV

pytestmark = pytest.mark.e2e
MODEL, PEOPLE = "breast-cancer", "people"
DIABETES_ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
#: What is compared, per store: rows of the models nobody predicts with after the backup, feedback, alerts.
FIXED = {"batches": "SELECT model, version, base, rows, positions, subjects, outputs FROM prediction_batches "
                    "WHERE model <> 'diabetes' ORDER BY base",
         "feedback": "SELECT id, label, model FROM feedback ORDER BY id",
         "alerts": "SELECT model, version, rule, state FROM alerts WHERE model <> 'diabetes' ORDER BY model, version, rule"}


def service(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**base, **env})


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr + done.stdout
    return done


def read(url: str) -> dict:
    store = Store.from_url(url)
    try:
        return {name: store.fetch(sql) for name, sql in FIXED.items()}
    finally:
        store.close()


class Client(threading.Thread):
    """Predicts one diabetes row at a time until stopped; keeps every status and latency."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.stopped, self.answers = base, threading.Event(), []

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopped.is_set():
                started = time.perf_counter()
                answer = session.post(f"{self.base}/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW]},
                                      timeout=30)
                self.answers.append((answer.status_code, time.perf_counter() - started))


def serve_and_back_up(artifact_root: Path, tmp_path: Path, server_factory, source: str | None = None,
                      wipe=None) -> tuple[Path, dict]:
    """Serve (on SQLite, or the store ``source`` names), change things, back up under load; return the
    backup and what the restored side must show. ``wipe`` loses a PostgreSQL store with the host."""
    package_with_subject(artifact_root, PEOPLE)
    copy_version(artifact_root, MODEL, 1, 2)
    key_file = tmp_path / "checkpoint.key"
    checkpoint.generate(key_file)
    env = {"AUDIT_CHECKPOINT_KEY_FILE": str(key_file), "AUDIT_CHECKPOINT_FILE": str(tmp_path / "points.jsonl"),
           "ARTIFACTS_DIR": str(artifact_root)}
    if source is not None:
        env["DATABASE_URL"] = source
    server = server_factory(artifact_root, ALERT_SECONDS="1", AUDIT_CHECKPOINT_SECONDS="1", **env)
    env.setdefault("DATABASE_URL", f"sqlite:///{artifact_root.parent / f'db-{server.port}' / 'predictions.db'}")
    ids = []
    for n in (5, 10, 20):
        answer = server.post(f"/v1/models/{MODEL}:predict", json={"instances": load_breast_cancer().data[:n].tolist()})
        assert answer.status_code == 200, answer.text
        ids += answer.json()["ids"]
    for customer in ("c1", "c2", "c1"):
        answer = server.post(f"/v1/models/{PEOPLE}:predict", json={"instances": [{"x": 4.0, "customer_id": customer}]})
        assert answer.status_code == 200, answer.text
    store = Store.from_url(env["DATABASE_URL"])
    wait_until(lambda: store.fetch("SELECT sum(rows) FROM prediction_batches")[0][0] == 38, 15, message="logged")
    feedback = server.post(f"/v1/models/{MODEL}/feedback", json={"feedback": [{"id": i, "label": 0} for i in ids[:12]]})
    assert feedback.json()["accepted"] == 12, feedback.text
    ok(service(env, "label", "set", MODEL, "staging", "2", "--reason", "candidate"))
    ok(service(env, "rollout", "set", MODEL, "--canary", "2", "--weight", "10", "--reason", "try it"))
    erased = json.loads(ok(service(env, "erase", "--subject", "c1", "--json")).stdout)
    assert erased["deleted"]["predictions"] == 2
    wait_until(lambda: store.fetch("SELECT count(*) FROM alerts WHERE model = ?", (MODEL,))[0][0] > 0, 20,
               message="alert states")
    wait_until(lambda: checkpoint.read(tmp_path / "points.jsonl"), 20, message="a checkpoint")
    store.close()
    models = server.get("/v1/models").json()["models"]

    client = Client(server.base)
    client.start()
    wait_until(lambda: len(client.answers) >= 50, 30, message="traffic before the backup")
    made = ok(service(env, "backup", str(tmp_path / "backups")))
    during = len(client.answers)
    wait_until(lambda: len(client.answers) >= during + 20, 30, message="traffic after the backup")
    client.stopped.set()
    client.join(timeout=30)
    assert {status for status, _ in client.answers} == {200}
    folder = Path(made.stdout.strip())
    written = json.loads((folder / "manifest.json").read_text())
    assert written["models"][MODEL]["labels"] == {"production": 1, "staging": 2}
    server.stop()  # every record written: the source's rows can be compared with the restored ones
    expected = {"models": models, "rows": read(env["DATABASE_URL"]), "manifest": written,
                "key_file": key_file}
    shutil.rmtree(artifact_root)  # the host is lost
    if source is None:
        shutil.rmtree(Path(env["DATABASE_URL"][len("sqlite:///"):]).parent)
    else:
        wipe()
    (tmp_path / "points.jsonl").unlink()
    return folder, expected


def restore_and_compare(folder: Path, expected: dict, target: Path, url: str, server_factory) -> None:
    env = {"ARTIFACTS_DIR": str(target), "DATABASE_URL": url, "AUDIT_CHECKPOINT_FILE": str(target.parent / "points.jsonl"),
           "AUDIT_CHECKPOINT_KEY_FILE": str(expected["key_file"])}
    ok(service(env, "restore", str(folder)))
    assert read(url) == expected["rows"]
    assert read(url)["alerts"] and len(read(url)["batches"]) == 4  # three breast-cancer batches, c2's (c1 erased)
    counted = Store.from_url(url)
    assert counted.fetch("SELECT count(*) FROM prediction_batches WHERE model = 'diabetes'")[0][0] == \
        expected["manifest"]["store"]["rows"]["prediction_batches"] - 4
    counted.close()
    verified = ok(service(env, "audit", "verify"))
    assert f"{expected['manifest']['audit']['seq'] + 1} record(s)" in verified.stdout  # and the restore's own
    assert "anchored by a checkpoint" in verified.stdout
    ok(service(env, "registry", "check"))
    server = server_factory(target, DATABASE_URL=url, ALERT_SECONDS="0")
    assert server.get("/v1/models").json()["models"] == expected["models"]
    for label in ("production", "staging"):
        answer = server.post(f"/v1/models/{MODEL}/labels/{label}:predict",
                             json={"instances": load_breast_cancer().data[:1].tolist()})
        assert answer.status_code == 200 and answer.json()["version"] == {"production": 1, "staging": 2}[label]
    monitoring = server.get(f"/v1/models/{MODEL}/monitoring").json()
    assert monitoring["versions"]["1"]["performance"]["labelled"] == 12


def test_a_backup_under_load_restores_into_a_fresh_folder_and_store(artifact_root, tmp_path, server_factory):
    folder, expected = serve_and_back_up(artifact_root, tmp_path, server_factory)
    restore_and_compare(folder, expected, tmp_path / "restored" / "artifacts",
                        f"sqlite:///{tmp_path / 'restored' / 'store.sqlite'}", server_factory)

    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    flip_byte(damaged / pinned.SQLITE_COPY, offset=8192 + 7)
    refused = service({"ARTIFACTS_DIR": str(tmp_path / "other"), "DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"},
                      "restore", str(damaged))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == "Error: damaged backup: store/predictions.db does not match its sha256 in manifest.json\n"
    assert not (tmp_path / "other").exists()


@pytest.mark.postgres
def test_the_same_backup_restores_into_postgresql(artifact_root, tmp_path, server_factory, postgres_url):
    folder, expected = serve_and_back_up(artifact_root, tmp_path, server_factory)
    restore_and_compare(folder, expected, tmp_path / "restored" / "artifacts", postgres_url, server_factory)


@pytest.mark.postgres
def test_a_postgresql_deployment_backed_up_under_load_restores_into_postgresql_and_sqlite(
        artifact_root, tmp_path, server_factory, postgres_server):
    """The same on PostgreSQL: served, backed up with pg_dump under load, the database dropped, restored
    into another database and into SQLite; a dump with one byte changed is refused in one line."""
    source = postgres_server.create_database()
    name = source.rsplit("/", 1)[1]
    folder, expected = serve_and_back_up(artifact_root, tmp_path, server_factory, source,
                                         wipe=lambda: postgres_server.execute(f"DROP DATABASE {name} WITH (FORCE)"))
    assert expected["manifest"]["store"]["backend"] == "postgresql"
    restore_and_compare(folder, expected, tmp_path / "into-postgresql" / "artifacts", postgres_server.create_database(),
                        server_factory)
    restore_and_compare(folder, expected, tmp_path / "into-sqlite" / "artifacts",
                        f"sqlite:///{tmp_path / 'into-sqlite' / 'store.sqlite'}", server_factory)

    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    flip_byte(damaged / pinned.PG_COPY, offset=(damaged / pinned.PG_COPY).stat().st_size // 2)
    refused = service({"ARTIFACTS_DIR": str(tmp_path / "other"), "DATABASE_URL": postgres_server.create_database()},
                      "restore", str(damaged))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == "Error: damaged backup: store/store.pgdump does not match its sha256 in manifest.json\n"
    assert not (tmp_path / "other").exists()
