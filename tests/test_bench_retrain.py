"""``python -m bench.retrain``: its command line (the run itself fills a large log)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_help_runs_nothing():
    done = subprocess.run([sys.executable, "-m", "bench.retrain", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m bench.retrain") and done.stderr == ""
    assert "--rows" in done.stdout and "--max-rows" in done.stdout
