"""Faulty artifacts and failing models through the HTTP shell, in-process: the versions that work keep serving.

Faults that need processes (a worker killed mid-traffic, a full disk under the CLI) stay in
tests/e2e/test_faults.py.
"""

from __future__ import annotations

import logging
import os

import joblib
import pandas as pd

from service.models import artifacts, registry
from service.models.packaging import package_model
from tests.builders import copy_version
from tests.faulty_models import TRIGGER, MarkerOnUnpickle, RaisingRegressor

CANCER = {"instances": [[1.0] * 30]}


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


def flip_byte_after(path, needle: bytes) -> None:
    """Flip one bit two bytes after the first ``needle``: a file that still parses, with another hash."""
    data = bytearray(path.read_bytes())
    data[data.index(needle) + 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_tampered_artifact_is_refused_without_unpickling(artifact_root, tmp_path, make_app, caplog):
    marker = tmp_path / "unpickled.marker"
    folder = copy_version(artifact_root, "breast-cancer", 1, 2)
    replace_model_file(folder, MarkerOnUnpickle(marker))
    flip_byte_after(folder / artifacts.MODEL_FILE, b"AAAA")  # inside the padding: still a loadable pickle
    with caplog.at_level(logging.INFO):
        client = make_app().test_client()
    status = client.get("/v1/models/breast-cancer/versions/2").get_json()
    assert status["status"] == "FAILED"
    assert "sha256" in status["reason"]
    assert not marker.exists(), "the tampered file was unpickled"
    refused = client.post("/v1/models/breast-cancer/versions/2:predict", json=CANCER)
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "model_unavailable"
    served = client.post("/v1/models/breast-cancer:predict", json=CANCER)
    assert served.status_code == 200 and served.get_json()["version"] == 1
    refusals = [r for r in caplog.records if r.getMessage() == "model version refused"]
    assert refusals and "sha256" in refusals[0].reason


def test_foreign_scikit_learn_version_is_refused(artifact_root, make_app):
    folder = copy_version(artifact_root, "diabetes", 1, 2)
    manifest = artifacts.read_manifest(folder)
    manifest["libraries"]["scikit-learn"] = "0.24.2"
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    client = make_app().test_client()
    status = client.get("/v1/models/diabetes/versions/2").get_json()
    assert status["status"] == "FAILED" and "0.24.2" in status["reason"]
    assert client.get("/readyz").status_code == 200  # production (version 1) is fine


def test_broken_production_version_makes_the_server_unready(artifact_root, make_app):
    flip_byte_after(artifact_root / "diabetes" / "1" / artifacts.MODEL_FILE, b"\x00")
    client = make_app().test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["error"]["details"]["models"]["diabetes"]["status"] == "FAILED"
    assert client.post("/v1/models/breast-cancer:predict", json=CANCER).status_code == 200


def test_a_model_that_raises_gives_a_500_in_the_error_shape(tmp_path, make_app, caplog):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    root = tmp_path / "fragile-artifacts"
    manifest = package_model(RaisingRegressor().fit(X.to_numpy(), y), "fragile", root, X, y)
    registry.record_packaged(root, manifest, actor="test")
    client = make_app(artifacts_dir=root).test_client()
    with caplog.at_level(logging.ERROR):
        failed = client.post("/v1/models/fragile:predict", json={"instances": [[TRIGGER, 1.0]]})
    text = failed.get_data(as_text=True)
    assert failed.status_code == 500 and failed.headers["Content-Type"] == "application/json"
    assert failed.get_json()["error"]["code"] == "prediction_failed"
    assert set(failed.get_json()["error"]) == {"code", "message", "details"}
    assert "Traceback" not in text and "on purpose" not in text
    fine = client.post("/v1/models/fragile:predict", json={"instances": [[1.0, 2.0]]})
    assert fine.status_code == 200 and fine.get_json()["predictions"] == [3.0]
    logged = [r for r in caplog.records if getattr(r, "code", None) == "prediction_failed"]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is ArithmeticError
