"""``export <m> <v> --format onnx|pmml`` copies the verified, parity-checked file; otherwise one line says why."""

from __future__ import annotations

import shutil

import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer

from service.cli import cli
from service.models import artifacts, registry
from service.models.packaging import package_model
from tests.builders import flip_byte
from tests.faulty_models import SumRegressor


@pytest.fixture
def root(demo_root, tmp_path):
    return shutil.copytree(demo_root, tmp_path / "artifacts")


def run(root, *args):
    runner = CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None})
    return runner.invoke(cli, [*args, "--artifacts-dir", str(root)])


def test_export_writes_the_stored_onnx_file(root, tmp_path):
    import onnxruntime

    out = tmp_path / "bc.onnx"
    result = run(root, "export", "breast-cancer", "1", "--format", "onnx", "--out", str(out))
    assert result.exit_code == 0, result.output
    manifest = artifacts.read_manifest(artifacts.version_dir(root, "breast-cancer", 1))
    assert manifest["files"]["model.onnx"]["sha256"] == artifacts.sha256_file(out)
    assert result.stdout == f"exported breast-cancer version 1 as onnx to {out} (sha256 {artifacts.sha256_file(out)})\n"
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    report = manifest["backends"]["onnx"]
    assert report["status"] == "ok" and report["layout"] == "matrix"
    rows = load_breast_cancer(as_frame=True).data.head(5)
    dtype = np.float32 if report["input_dtype"] == "float" else np.float64
    labels = session.run(None, {session.get_inputs()[0].name: rows.to_numpy(dtype=dtype)})[0]
    model = joblib.load(artifacts.version_dir(root, "breast-cancer", 1) / "model.joblib")
    assert labels.tolist() == model.predict(rows).tolist()
    again = run(root, "export", "breast-cancer", "1", "--format", "onnx", "--out", str(out))
    assert again.exit_code == 1 and again.stderr == f"Error: --out {out} exists; choose another path or remove it\n"


def test_a_tampered_version_is_not_exported(root, tmp_path):
    flip_byte(artifacts.version_dir(root, "breast-cancer", 1) / "model.onnx")
    result = run(root, "export", "breast-cancer", "1", "--format", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "model.onnx" in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_a_model_onnx_cannot_hold_gets_one_line(tmp_path):
    root = tmp_path / "artifacts"
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    registry.record_packaged(root, package_model(SumRegressor().fit(X.to_numpy(), y), "custom", root, X, y), actor="t")
    result = run(root, "export", "custom", "1", "--format", "onnx", "--out", str(tmp_path / "c.onnx"))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: custom version 1 has no parity-checked ONNX file (unsupported: ")


def test_pmml_of_a_version_packaged_without_it_says_so_in_one_line(root, tmp_path):
    # the PMML conversions themselves (Java) are tested in tests/models/test_pmml_export.py
    result = run(root, "export", "diabetes", "1", "--format", "pmml", "--out", str(tmp_path / "d.pmml"))
    assert result.exit_code == 1
    assert result.stderr == ("Error: diabetes version 1 was packaged without a PMML export; "
                             "package it again with --pmml\n")
    assert not (tmp_path / "d.pmml").exists()


def test_without_out_it_writes_under_exports_and_says_where(root, tmp_path, monkeypatch):
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run(root, "export", "breast-cancer", "1", "--format", "onnx")
    assert result.exit_code == 0, result.output
    written = work / "exports" / "breast-cancer-1.onnx"
    assert result.stdout == (f"exported breast-cancer version 1 as onnx to {written} "
                             f"(sha256 {artifacts.sha256_file(written)})\n")
    assert [p.name for p in work.iterdir()] == ["exports"]  # nothing loose in the folder it ran from

