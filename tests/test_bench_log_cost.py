"""``python -m bench.log_cost``: its arithmetic and its command line (the run itself starts servers)."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.log_cost import overhead

ROOT = Path(__file__).resolve().parents[1]


def test_overhead_is_the_log_share_of_the_log_off_cost():
    assert overhead(1100.0, 1000.0) == pytest.approx(10.0)
    assert overhead(900.0, 1000.0) == pytest.approx(-10.0)  # noise may make it negative: reported as measured


def test_help_runs_nothing():
    done = subprocess.run([sys.executable, "-m", "bench.log_cost", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m bench.log_cost") and done.stderr == ""
    assert "--tree" in done.stdout and "--rows" in done.stdout
