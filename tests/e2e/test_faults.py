"""End to end: faults on disk and in processes never cost the versions that work."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time

import joblib
import numpy as np
import pandas as pd
import pytest

from service.models import artifacts, registry
from service.models.packaging import package_model
from tests.faulty_models import TRIGGER, MarkerOnUnpickle, RaisingRegressor

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]


def replace_model_file(folder, obj) -> None:
    """Swap a version's model file for ``obj`` and re-hash it, so only the content is hostile."""
    model_path = folder / artifacts.MODEL_FILE
    os.chmod(model_path, 0o644)
    joblib.dump(obj, model_path)
    manifest = artifacts.read_manifest(folder)
    manifest["files"][artifacts.MODEL_FILE] = artifacts.file_entry(model_path)
    manifest["content_sha256"] = artifacts.content_hash(manifest["files"])
    os.chmod(folder / artifacts.MANIFEST, 0o644)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)


def flip_byte(path, needle: bytes = b"AAAA") -> None:
    data = bytearray(path.read_bytes())
    data[data.index(needle) + 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def copy_as_version(root, name: str, source: int, target: int):
    import shutil

    folder = artifacts.version_dir(root, name, target)
    shutil.copytree(artifacts.version_dir(root, name, source), folder)
    manifest = artifacts.read_manifest(folder)
    manifest["version"] = target
    os.chmod(folder / artifacts.MANIFEST, 0o644)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    return folder


def test_tampered_artifact_is_refused_without_unpickling(artifact_root, tmp_path, server_factory):
    marker = tmp_path / "unpickled.marker"
    folder = copy_as_version(artifact_root, "breast-cancer", 1, 2)
    replace_model_file(folder, MarkerOnUnpickle(marker))
    flip_byte(folder / artifacts.MODEL_FILE)  # one byte, inside the padding: still a loadable pickle
    server = server_factory(artifact_root)
    status = server.get("/v1/models/breast-cancer/versions/2").json()
    assert status["status"] == "FAILED"
    assert "sha256" in status["reason"]
    assert not marker.exists(), "the tampered file was unpickled"
    refused = server.post("/v1/models/breast-cancer/versions/2:predict", json={"instances": [[1.0] * 30]})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_unavailable"
    served = server.post("/v1/models/breast-cancer:predict", json={"instances": [[1.0] * 30]})
    assert served.status_code == 200 and served.json()["version"] == 1
    refusals = [r for r in server.log_records() if r.get("message") == "model version refused"]
    assert refusals and "sha256" in refusals[0]["reason"]


def test_foreign_scikit_learn_version_is_refused(artifact_root, server_factory):
    folder = copy_as_version(artifact_root, "diabetes", 1, 2)
    manifest = artifacts.read_manifest(folder)
    manifest["libraries"]["scikit-learn"] = "0.24.2"
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    server = server_factory(artifact_root)
    status = server.get("/v1/models/diabetes/versions/2").json()
    assert status["status"] == "FAILED" and "0.24.2" in status["reason"]
    assert server.get("/readyz").status_code == 200  # production (version 1) is fine


def test_broken_production_version_makes_the_server_unready(artifact_root, server_factory):
    flip_byte(artifact_root / "diabetes" / "1" / artifacts.MODEL_FILE, needle=b"\x00")
    server = server_factory(artifact_root, wait="/healthz")
    ready = server.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["models"]["diabetes"]["status"] == "FAILED"
    assert server.post("/v1/models/breast-cancer:predict", json={"instances": [[1.0] * 30]}).status_code == 200


def test_a_model_that_raises_gives_a_500_in_the_error_shape(tmp_path, server_factory):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    root = tmp_path / "artifacts"
    manifest = package_model(RaisingRegressor().fit(X.to_numpy(), y), "fragile", root, X, y)
    registry.record_packaged(root, manifest, actor="test")
    server = server_factory(root)
    failed = server.post("/v1/models/fragile:predict", json={"instances": [[TRIGGER, 1.0]]})
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "prediction_failed"
    assert "Traceback" not in failed.text and "on purpose" not in failed.text
    fine = server.post("/v1/models/fragile:predict", json={"instances": [[1.0, 2.0]]})
    assert fine.status_code == 200 and fine.json()["predictions"] == [3.0]
    logged = [r for r in server.log_records() if r.get("code") == "prediction_failed"]
    assert logged and "ArithmeticError" in logged[0]["exc"]


def test_worker_killed_mid_traffic_is_replaced_and_serving_continues(demo_root, server_factory):
    server = server_factory(demo_root, WEB_CONCURRENCY="2")
    body = {"instances": [ROW] * 50}
    outcomes: list[int | str] = []
    stop = threading.Event()

    def traffic() -> None:
        import requests

        with requests.Session() as session:
            while not stop.is_set():
                try:
                    outcomes.append(session.post(server.base + "/v1/models/diabetes:predict", json=body,
                                                 timeout=10).status_code)
                except requests.RequestException as exc:
                    outcomes.append(type(exc).__name__)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(1.0)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = server.worker_pids()
            if len(pids) == 2 and victim not in pids:
                break
            time.sleep(0.2)
        time.sleep(1.5)
        sent_after_restart = len(outcomes)
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(timeout=15)
    assert victim not in server.worker_pids() and len(server.worker_pids()) == 2
    failures = [o for o in outcomes if o != 200]
    assert len(failures) <= 2, failures  # at most the request(s) in flight on the killed worker
    assert len(outcomes) > sent_after_restart + 5 and all(o == 200 for o in outcomes[sent_after_restart:])


FILE_LIMIT = 16 * 1024


def _limit_file_size() -> None:
    """Make every write past 16 KiB fail with EFBIG, as a full disk would."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def test_full_disk_while_packaging_leaves_no_half_written_version(artifact_root, tmp_path):
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(3000, 40)), columns=[f"f{i}" for i in range(40)])
    y = pd.Series(X.sum(axis=1))
    from sklearn.linear_model import LinearRegression

    joblib.dump(LinearRegression().fit(X, y), tmp_path / "model.joblib")
    pd.concat([X, y.rename("target")], axis=1).to_csv(tmp_path / "holdout.csv", index=False)
    before = sorted(p.name for p in (artifact_root).iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "service", "package", "--model", str(tmp_path / "model.joblib"), "--name", "wide",
         "--data", str(tmp_path / "holdout.csv"), "--target", "target", "--artifacts-dir", str(artifact_root)],
        capture_output=True, text=True, preexec_fn=_limit_file_size, cwd=tmp_path.parent,
        env={**os.environ, "PYTHONPATH": str(artifacts.Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    wide = artifact_root / "wide"
    assert not wide.exists() or not [p for p in wide.iterdir() if not p.name.startswith(".registry")]
    assert sorted(p.name for p in artifact_root.iterdir() if p.name != "wide") == before


def test_full_disk_while_changing_labels_keeps_the_old_state(artifact_root):
    before = (artifact_root / "diabetes" / "registry.json").read_bytes()
    # a history big enough that rewriting registry.json passes the limit
    state = registry.read_state(artifact_root, "diabetes")
    state["history"] += [{"at": "2026-01-01T00:00:00Z", "actor": "x", "action": "note", "reason": "r" * 200}] * 400
    artifacts.write_json_atomic(artifact_root / "diabetes" / "registry.json", state)
    before = (artifact_root / "diabetes" / "registry.json").read_bytes()
    assert len(before) > FILE_LIMIT
    result = subprocess.run(
        [sys.executable, "-m", "service", "label", "set", "diabetes", "staging", "1",
         "--artifacts-dir", str(artifact_root)], capture_output=True, text=True, preexec_fn=_limit_file_size,
    )
    assert result.returncode == 1 and result.stderr.startswith("Error: ")
    assert (artifact_root / "diabetes" / "registry.json").read_bytes() == before
    assert not [p for p in (artifact_root / "diabetes").iterdir() if p.name.endswith(".tmp")]
