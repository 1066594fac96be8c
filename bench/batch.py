"""``python -m bench.batch``: batch scoring's rows per second and peak memory, against MLflow's.

Trains the demo models into a temporary folder, writes ``--rows`` rows (1,000,000 by default,
100,000 with ``--quick``, what ``make bench BENCH_ARGS=--quick`` runs) drawn from the demo
classifier's data set as Parquet (row groups of 100,000, as a data tool writes them), and scores
them with ``python -m service score`` (validation on, as always; Parquet in and out). When
pyspark is importable, ``deploy/spark/score_files.py`` scores the same Parquet file in local
mode (``local[2]``), with the same validation. When MLflow is importable, the same fitted
estimator is saved with ``mlflow.sklearn.save_model`` and ``mlflow models predict --env-manager
local`` scores the same rows (as CSV: it reads no Parquet). Each tool runs as a child process;
its wall time, and its peak resident memory from ``wait4``'s rusage, are printed as one JSON line
per tool, with its start-up (the wall time of a 100-row run) and the rate once started, since
importing scikit-learn costs both tools seconds that have nothing to do with scoring; a table of
them with the ratios to MLflow's ends the output. Everything is written under a temporary folder
that is removed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess  # nosec B404  # the bench runs the command line and MLflow as children
import sys
import tempfile
import time
from pathlib import Path

from bench.server import REPO

MODEL = "breast-cancer"
ROWS = 1_000_000
QUICK_ROWS = 100_000
CLI, SPARK, MLFLOW = "python -m service score", "Spark local[2] (deploy/spark/score_files.py)", "mlflow models predict"
ROW_GROUP = 100_000


def write_rows(folder: Path, rows: int) -> tuple[Path, Path]:
    """``rows`` rows of the classifier's features (its data set, repeated with a little noise) as Parquet and CSV."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data
    rng = np.random.default_rng(42)
    parquet, csv = folder / "rows.parquet", folder / "rows.csv"
    with pq.ParquetWriter(parquet, pa.Schema.from_pandas(data, preserve_index=False)) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            picked = data.iloc[rng.integers(0, len(data), n)].reset_index(drop=True)
            noisy = picked * rng.uniform(0.95, 1.05, size=picked.shape)  # measurements stay >= 0
            writer.write_table(pa.Table.from_pandas(pd.DataFrame(noisy, columns=data.columns), preserve_index=False))
            noisy.to_csv(csv, mode="a", header=start == 0, index=False)
    return parquet, csv


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command`` to the end; return its wall seconds, peak RSS in MB and stdout (fail on a non-zero exit)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=err)  # noqa: S603  # nosec B603  # our own commands
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:4])} failed with exit code {proc.returncode}: {stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout  # Linux reports kilobytes


def line(tool: str, rows: int, seconds: float, rss_mb: float, **extra: object) -> dict[str, object]:
    return {"tool": tool, "rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
            "peak_rss_mb": round(rss_mb, 1), **extra}


def table(results: list[dict[str, object]]) -> list[str]:
    """The comparison as aligned text: one line per tool, MLflow's rate as the unit."""
    mlflow = next((r for r in results if r["tool"] == MLFLOW), None)
    header = ("tool", "rows", "seconds", "rows/s", "rows/s after start-up", "peak RSS MB", "x MLflow",
              "x MLflow after start-up")
    lines = [header]
    for r in results:
        times = after = "-"
        if mlflow is not None:
            times = f"{r['rows_per_second'] / mlflow['rows_per_second']:.2f}"
            if r.get("rows_per_second_after_startup") and mlflow.get("rows_per_second_after_startup"):
                after = f"{r['rows_per_second_after_startup'] / mlflow['rows_per_second_after_startup']:.2f}"
        lines.append((str(r["tool"]), f"{r['rows']:,}", f"{r['seconds']:.1f}", f"{r['rows_per_second']:,}",
                      f"{r['rows_per_second_after_startup']:,}" if r.get("rows_per_second_after_startup") else "-",
                      f"{r['peak_rss_mb']:.0f}", times, after))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in lines]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help=f"rows to score (default: {ROWS:,}; --quick: {QUICK_ROWS:,})")
    parser.add_argument("--quick", action="store_true", help="fewer rows: a run of a few minutes")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow run")
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark run (local[2])")
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    results: list[dict[str, object]] = []

    def report(result: dict[str, object]) -> None:
        results.append(result)
        print(json.dumps(result), flush=True)

    try:
        env = {**os.environ, "ARTIFACTS_DIR": str(folder / "artifacts"),
               "DATABASE_URL": f"sqlite:///{folder / 'store.db'}", "PYTHONPATH": str(REPO)}
        env.pop("LOG_LEVEL", None)
        subprocess.run([sys.executable, "-m", "service", "train-demo"], env=env, cwd=REPO, check=True,  # noqa: S603  # nosec B603  # our own command
                       stdout=subprocess.DEVNULL)
        parquet, csv = write_rows(folder, rows)
        tiny_parquet, tiny_csv = _tiny(folder, parquet)

        def score(source: Path, out: str) -> tuple[float, float, str]:
            return run([sys.executable, "-m", "service", "score", MODEL, str(source), str(folder / out)], env)

        startup = score(tiny_parquet, "tiny-scored.parquet")[0]
        seconds, rss, stdout = score(parquet, "scored.parquet")
        summary = json.loads(stdout.strip().splitlines()[-1])  # the run's own rate: start-up and hashing left out
        report(line(CLI, rows, seconds, rss, input="parquet", output="parquet", validation=True,
                    startup_seconds=round(startup, 2),
                    rows_per_second_after_startup=_after(rows, seconds, startup),
                    scoring_rows_per_second=summary["rows_per_second"]))
        if not args.no_spark and _importable("pyspark"):
            report(_spark(folder, parquet, rows, env))
        if not args.no_mlflow and _importable("mlflow.sklearn"):
            report(_mlflow(folder, csv, tiny_csv, rows, env))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    for text in table(results):
        print(text)


def _mlflow(folder: Path, csv: Path, tiny_csv: Path, rows: int, env: dict[str, str]) -> dict[str, object]:
    """``mlflow models predict`` on the same rows (CSV: it reads no Parquet), after a 100-row run for its start-up."""
    model_dir = _save_for_mlflow(folder)
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"

    def predict(source: Path, out: str) -> tuple[float, float, str]:
        return run([mlflow, "models", "predict", "-m", str(model_dir), "-i", str(source), "-t", "csv",
                    "-o", str(folder / out), "--env-manager", "local"], env)

    startup = predict(tiny_csv, "tiny-mlflow.json")[0]
    seconds, rss, _ = predict(csv, "mlflow.json")
    return line(MLFLOW, rows, seconds, rss, input="csv", output="json", validation=False,
                startup_seconds=round(startup, 2), rows_per_second_after_startup=_after(rows, seconds, startup))


def _after(rows: int, seconds: float, startup: float) -> int | None:
    """The rate once started; None when the start-up run took as long (a machine too busy to tell)."""
    return round(rows / (seconds - startup)) if seconds > startup else None


def _spark(folder: Path, parquet: Path, rows: int, env: dict[str, str]) -> dict[str, object]:
    """``deploy/spark/score_files.py`` in local mode (two cores) on the same Parquet file; its own summary
    gives the rate from session start to the last file written, the JVM's start-up left out."""
    spark_env = {**env, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    seconds, rss, stdout = run([sys.executable, str(REPO / "deploy" / "spark" / "score_files.py"), MODEL,
                                str(parquet), str(folder / "spark-out"), "--master", "local[2]"], spark_env)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return line(SPARK, rows, seconds, rss, input="parquet", output="parquet", validation=True,
                rows_per_second_after_startup=summary["rows_per_second"])


def _tiny(folder: Path, parquet: Path) -> tuple[Path, Path]:
    """The first 100 rows, as Parquet and CSV: a run of them measures what a tool costs before its first row."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(parquet).read_row_group(0).slice(0, 100)
    pq.write_table(rows, folder / "tiny.parquet")
    rows.to_pandas().to_csv(folder / "tiny.csv", index=False)
    return folder / "tiny.parquet", folder / "tiny.csv"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _save_for_mlflow(folder: Path) -> Path:
    """The production version's verified estimator, saved as an MLflow model."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer

    from service.models import artifacts
    from service.serving import runtime

    root = folder / "artifacts"
    version = artifacts.list_versions(root, MODEL)[-1]
    model = runtime.load(artifacts.version_dir(root, MODEL, version), name=MODEL, version=version, backend="joblib")
    sample = load_breast_cancer(as_frame=True).data.head(5)
    target = folder / "mlflow-model"
    # cloudpickle: MLflow's default (skops) is not installed, and the server's own format is a pickle too
    mlflow.sklearn.save_model(model.estimator, str(target), serialization_format="cloudpickle",
                              signature=infer_signature(sample, model.estimator.predict(sample)))
    return target


if __name__ == "__main__":
    main()
