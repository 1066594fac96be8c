"""``python -m bench``: its command line answers ``--help`` without running the benchmark."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import DEFAULT_SECONDS, DEFAULT_WORKERS, QUICK_SECONDS, build_parser, load_settings

ROOT = Path(__file__).resolve().parents[1]
BENCH_ENV = ("BENCH_SECONDS", "BENCH_WORKERS", "BENCH_CONNECTIONS")


def bench(*args):
    env = {k: v for k, v in os.environ.items() if k not in BENCH_ENV}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_help_prints_usage_and_runs_nothing():
    completed = bench("--help")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage: python -m bench")
    for option in ("--seconds", "--workers", "--connections", "--quick", "--results", "BENCH_SECONDS"):
        assert option in completed.stdout
    assert completed.stderr == ""  # progress lines ("bench: training ...") would mean it started


def test_a_bad_argument_is_a_usage_error_in_a_real_process():
    completed = bench("--seconds", "0")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("usage: python -m bench")
    assert "argument --seconds: must be a positive whole number, got '0'" in completed.stderr


@pytest.mark.parametrize("args", [("--workers", "two"), ("--connections", "-1"), ("--bogus",), ("extra",)])
def test_bad_arguments_are_refused(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_flags_win_over_the_environment_which_wins_over_defaults(monkeypatch):
    for name in BENCH_ENV:
        monkeypatch.delenv(name, raising=False)
    workers, settings = load_settings(build_parser().parse_args([]))
    assert (workers, settings.seconds, settings.connections) == (DEFAULT_WORKERS, DEFAULT_SECONDS, DEFAULT_WORKERS)

    monkeypatch.setenv("BENCH_SECONDS", "3")
    monkeypatch.setenv("BENCH_WORKERS", "4")
    workers, settings = load_settings(build_parser().parse_args([]))
    assert (workers, settings.seconds, settings.connections) == (4, 3, 4)

    workers, settings = load_settings(build_parser().parse_args(["--seconds", "5", "--connections", "1"]))
    assert (workers, settings.seconds, settings.connections) == (4, 5, 1)


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("BENCH_SECONDS", "soon")
    with pytest.raises(SystemExit, match="BENCH_SECONDS must be a positive whole number, got 'soon'"):
        load_settings(build_parser().parse_args([]))


def test_quick_shortens_the_runs_unless_seconds_are_given(monkeypatch):
    monkeypatch.setenv("BENCH_SECONDS", "30")
    _, settings = load_settings(build_parser().parse_args(["--quick"]))
    assert settings.seconds == QUICK_SECONDS < DEFAULT_SECONDS
    _, settings = load_settings(build_parser().parse_args(["--quick", "--seconds", "4"]))
    assert settings.seconds == 4


@pytest.mark.parametrize(("module", "options"), [
    ("bench.backup", ("--rows", "--clients")),
    ("bench.retrain", ("--rows", "--max-rows")),
    ("bench.log_cost", ("--tree", "--rows")),
    ("bench.workers", ("--rounds", "--seconds")),
])
def test_each_bench_module_answers_help_and_runs_nothing(module, options):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module}") and done.stderr == ""
    assert all(option in done.stdout for option in options), done.stdout
