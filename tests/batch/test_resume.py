"""A run killed (SIGKILL) after its first chunk resumes where it stopped: same ids, same predictions,
no row twice, none lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_breast_cancer

from service.store import Store
from tests.conftest import REPO, SCRUBBED_ENV

ROWS = 120_000
CHUNK = 5_000
SAMPLE = 1_000


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "service", "score", "breast-cancer", *map(str, args)]


def test_a_killed_run_resumes_with_the_same_ids_and_predictions(artifact_root, tmp_path):
    data = load_breast_cancer(as_frame=True).data
    picked = data.iloc[np.random.default_rng(7).integers(0, len(data), ROWS)].reset_index(drop=True)
    picked.insert(0, "id", np.arange(ROWS))
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(picked, preserve_index=False), source, row_group_size=20_000)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(ARTIFACTS_DIR=str(artifact_root), DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}")
    out, state = tmp_path / "out.parquet", tmp_path / "out.parquet.score-state.json"
    options = ["--keep", "id", "--probabilities", "--chunk-rows", CHUNK, "--monitor-sample", SAMPLE]

    proc = subprocess.Popen(command(source, out, *options), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not (state.exists() and json.loads(state.read_text())["chunks_done"] >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed: make the input larger"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    killed = json.loads(state.read_text())
    assert 1 <= killed["chunks_done"] < ROWS // CHUNK and not out.exists()

    resumed = subprocess.run(command(source, out, *options, "--resume"), env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["run_id"] == killed["run_id"] and summary["resumed_from_row"] >= CHUNK
    assert (summary["rows"], summary["scored"], summary["rejects"]) == (ROWS, ROWS, 0)
    assert not state.exists() and not (tmp_path / "out.parquet.parts").exists()

    whole = tmp_path / "whole.parquet"
    once = subprocess.run(command(source, whole, *options), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert once.returncode == 0, once.stderr
    got, expected = pq.read_table(out).to_pandas(), pq.read_table(whole).to_pandas()
    assert got["id"].tolist() == list(range(ROWS))  # every row once, in order
    assert got["prediction_id"].tolist() == [f"{killed['run_id']}-{i}" for i in range(ROWS)]
    assert got["prediction_id"].is_unique
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    assert np.array_equal(got[["probability_0", "probability_1"]].to_numpy(),
                          expected[["probability_0", "probability_1"]].to_numpy())
    assert set(got["version"]) == {1}
    # the run's sample in the prediction log covers the rows scored before the kill too
    (positions,), = Store.from_url(env["DATABASE_URL"]).fetch(
        "SELECT positions FROM prediction_batches WHERE base = ?", (killed["run_id"],))
    positions = json.loads(positions)
    assert len(positions) == SAMPLE == len(set(positions)) and positions == sorted(positions)
    assert min(positions) < killed["rows_done"] and max(positions) >= killed["rows_done"]
