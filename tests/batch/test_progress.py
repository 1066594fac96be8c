"""The progress line is for a person at a terminal: rows/s and the time left, on stderr, only there."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from sklearn.datasets import load_breast_cancer

from tests.conftest import REPO, SCRUBBED_ENV


def test_a_terminal_sees_rows_per_second_and_the_time_left(artifact_root, tmp_path):
    data = load_breast_cancer(as_frame=True).data
    source = tmp_path / "in.parquet"
    data.sample(3000, replace=True, random_state=1).to_parquet(source, index=False, row_group_size=500)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(ARTIFACTS_DIR=str(artifact_root), DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}")
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "service", "score", "breast-cancer", str(source),
                               str(tmp_path / "out.csv"), "--chunk-rows", "500"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=follower, timeout=120)
        os.close(follower)
        shown = b""
        while True:
            try:
                piece = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed and drained
                break
            if not piece:
                break
            shown += piece
    finally:
        os.close(leader)
    assert done.returncode == 0
    text = shown.decode()
    assert "\r3,000 rows read, 0 rejected, " in text and " rows/s" in text and " s left" in text
    assert b"rows/s" not in done.stdout  # stdout holds only the summary
