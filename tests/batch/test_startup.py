"""What a run of a version ONNX Runtime answers loads: neither scikit-learn nor pandas (their imports were
most of a run's start-up), and still the answers of a run that loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.models import registry
from service.models.packaging import package_model
from tests.conftest import SCRUBBED_ENV

ROOT = Path(__file__).resolve().parents[2]
# the command line as ``python -m service`` runs it, then the heavy modules it loaded on the way
RUN = """
import json, runpy, sys
sys.argv = ["service", *sys.argv[1:]]
try:
    runpy.run_module("service", run_name="__main__")
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(name for name in ("sklearn", "scipy", "pandas", "joblib", "flask") if name in sys.modules)
print(json.dumps({"exit": code, "imported": heavy}), file=sys.stderr)
"""


def run(artifact_root: Path, tmp_path: Path, *args: str | Path, **settings: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(ARTIFACTS_DIR=str(artifact_root), DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
               PYTHONPATH=str(ROOT), **settings)
    done = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


def test_a_run_answered_by_onnx_imports_no_scikit_learn_nor_pandas_and_scores_like_one_that_does(artifact_root,
                                                                                                  tmp_path):
    X = load_breast_cancer(as_frame=True).data.iloc[::3]
    X.to_parquet(tmp_path / "in.parquet", index=False)
    lean, stdout = run(artifact_root, tmp_path, "score", "breast-cancer", tmp_path / "in.parquet",
                       tmp_path / "out.parquet", "--probabilities")
    assert lean == {"exit": 0, "imported": []}, stdout
    assert json.loads(stdout)["scored"] == len(X)
    forced, _ = run(artifact_root, tmp_path, "score", "breast-cancer", tmp_path / "in.parquet",
                    tmp_path / "joblib.parquet", "--probabilities", MODEL_BACKEND="joblib")
    assert forced["exit"] == 0 and "sklearn" in forced["imported"]
    onnx, joblib = pq.read_table(tmp_path / "out.parquet"), pq.read_table(tmp_path / "joblib.parquet")
    assert onnx.schema.field("prediction").type == joblib.schema.field("prediction").type == pa.int64()
    assert onnx.column("prediction").equals(joblib.column("prediction"))
    for name in ("probability_0", "probability_1"):  # packaging measured ONNX within 1e-9 of scikit-learn
        np.testing.assert_allclose(onnx.column(name).to_numpy(), joblib.column(name).to_numpy(), rtol=0, atol=1e-9)


def test_a_chunk_only_scikit_learn_can_answer_unpickles_the_version_then(batch, tmp_path):
    """A missing value in a string feature is answered by scikit-learn (ONNX has no null string): the pickle
    is unpickled on the way, pandas imported although pyarrow was told it was absent, and the rows come
    out as a run in a process that had them loaded from the start (the test's own) gives them."""
    loose_model(batch.root)
    source = tmp_path / "in.csv"
    source.write_text("x,c\n0.5,a\n0.1,\n0.9,b\n")
    fresh, stdout = run(batch.root, tmp_path, "score", "loose", source, tmp_path / "fresh.parquet", "--probabilities")
    assert fresh["exit"] == 0 and {"sklearn", "pandas"} <= set(fresh["imported"]), stdout
    assert json.loads(stdout)["scored"] == 3
    here = batch.score("loose", source, tmp_path / "here.parquet", "--probabilities")
    assert here.exit_code == 0, here.output
    columns = ["prediction", "probability_0", "probability_1", "model", "version"]
    assert pq.read_table(tmp_path / "fresh.parquet").select(columns).equals(
        pq.read_table(tmp_path / "here.parquet").select(columns))


def loose_model(root: Path) -> None:
    """Package ``loose``: a number and a text that may be missing, in a pipeline ONNX reproduces exactly."""
    X = pd.DataFrame({"x": np.linspace(0, 1, 40), "c": [None if i % 5 == 0 else "ab"[i % 2] for i in range(40)]})
    y = pd.Series(np.arange(40) % 2)
    model = make_pipeline(make_column_transformer(("passthrough", ["x"]), (OneHotEncoder(handle_unknown="ignore"), ["c"])),
                          LogisticRegression()).fit(X.fillna({"c": "?"}), y)
    manifest = package_model(model, "loose", root, X, y)
    assert manifest["backends"]["onnx"]["status"] == "ok"  # ONNX answers every row but those missing c
    registry.record_packaged(root, manifest, actor="test")
