"""``python -m bench.batch``: its table, its command line, and a real run of the command line on a few rows."""

import subprocess
import sys
from pathlib import Path

from bench.batch import CLI, CLI_CSV, MLFLOW, SPARK, median_runs, table, verdict

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_gives_each_tool_its_ratio_to_mlflow():
    results = [{"tool": CLI, "rows": 1_000_000, "seconds": 5.0, "rows_per_second": 200_000, "peak_rss_mb": 480.4,
                "rows_per_second_after_startup": 500_000},
               {"tool": SPARK, "rows": 1_000_000, "seconds": 50.0, "rows_per_second": 20_000, "peak_rss_mb": 900.0,
                "rows_per_second_after_startup": 25_000},
               {"tool": MLFLOW, "rows": 1_000_000, "seconds": 20.0, "rows_per_second": 50_000, "peak_rss_mb": 1300.0,
                "rows_per_second_after_startup": 100_000}]
    lines = table(results)
    assert lines[0].split("  ")[0] == "tool" and "x MLflow after start-up" in lines[0]
    assert lines[1].split()[-6:] == ["5.0", "200,000", "500,000", "480", "4.00", "5.00"]
    assert lines[2].split()[-2:] == ["0.40", "0.25"]
    assert lines[3].split()[-2:] == ["1.00", "1.00"]
    assert table(results[:1])[1].split()[-2:] == ["-", "-"]  # no MLflow run: no ratio


def test_each_tool_is_judged_by_its_median_run_and_its_largest_peak():
    cli = [{"tool": CLI, "rows": 1_000_000, "seconds": seconds, "rows_per_second": round(1_000_000 / seconds),
            "peak_rss_mb": rss} for seconds, rss in ((5.0, 500.0), (4.0, 610.0), (8.0, 520.0))]
    mlflow = [{"tool": MLFLOW, "rows": 1_000_000, "seconds": 20.0, "rows_per_second": 50_000, "peak_rss_mb": 1300.0}]
    medians = median_runs([cli[0], mlflow[0], cli[1], cli[2]])
    assert [r["tool"] for r in medians] == [CLI, MLFLOW]
    assert (medians[0]["seconds"], medians[0]["runs"], medians[0]["peak_rss_mb"]) == (5.0, 3, 610.0)
    assert verdict(medians) == ("verdict: 4.00x MLflow's rows/s, target >= 5x: NOT met; "
                                "peak RSS 610 MB, target <= 600: NOT met")
    faster = [{**medians[0], "rows_per_second": 250_000, "peak_rss_mb": 550.0}, medians[1]]
    assert verdict(faster) == "verdict: 5.00x MLflow's rows/s, target >= 5x: met; peak RSS 550 MB, target <= 600: met"
    assert verdict(faster[:1]) == "verdict: no MLflow run to compare with; peak RSS 550 MB, target <= 600: met"
    csv = {"tool": CLI_CSV, "rows": 1_000_000, "seconds": 9.0, "rows_per_second": 111_111, "peak_rss_mb": 615.0}
    assert verdict([*faster, csv]) == ("verdict: 5.00x MLflow's rows/s, target >= 5x: met; peak RSS 550 MB, "
                                       "target <= 600: met; CSV in: peak RSS 615 MB, target <= 600: NOT met")


def test_help_runs_nothing():
    done = subprocess.run([sys.executable, "-m", "bench.batch", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m bench.batch") and done.stderr == ""
    assert "--quick" in done.stdout and "--no-spark" in done.stdout


def test_a_small_run_prints_the_command_lines_row():
    done = subprocess.run([sys.executable, "-m", "bench.batch", "--rows", "2000", "--repeats", "1", "--no-mlflow",
                           "--no-spark"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()
    assert last[-3].startswith("tool") and last[-2].startswith(CLI) and last[-1].startswith("verdict: no MLflow run")
    assert last[-2].split()[len(CLI.split()):][0] == "2,000"
