"""``python -m bench.backup``: its arithmetic and its command line (the run itself starts a server)."""

from pathlib import Path

from bench.backup import percentiles

ROOT = Path(__file__).resolve().parents[1]


def test_percentiles_are_in_milliseconds():
    found = percentiles([0.001] * 99 + [0.1])
    assert found["n"] == 100 and found["p50_ms"] == 1.0 and found["max_ms"] == 100.0
    assert 1.0 < found["p99_ms"] <= 100.0
