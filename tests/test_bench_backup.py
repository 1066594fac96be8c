"""``python -m bench.backup``: its arithmetic and its command line (the run itself starts a server)."""

import subprocess
import sys
from pathlib import Path

from bench.backup import percentiles

ROOT = Path(__file__).resolve().parents[1]


def test_percentiles_are_in_milliseconds():
    found = percentiles([0.001] * 99 + [0.1])
    assert found["n"] == 100 and found["p50_ms"] == 1.0 and found["max_ms"] == 100.0
    assert 1.0 < found["p99_ms"] <= 100.0


def test_help_runs_nothing():
    done = subprocess.run([sys.executable, "-m", "bench.backup", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m bench.backup") and done.stderr == ""
    assert "--rows" in done.stdout and "--clients" in done.stdout
