"""``python -m bench.batch``: batch scoring's rows per second and peak memory, against MLflow's.

Trains the demo models into a temporary folder, writes ``--rows`` rows (1,000,000 by default)
drawn from the demo classifier's data set as Parquet (row groups of 100,000, as a data tool
writes them), and scores them with ``python -m service score`` (validation on, as always;
Parquet in and out). When MLflow is importable, the same fitted estimator is saved with
``mlflow.sklearn.save_model`` and ``mlflow models predict --env-manager local`` scores the same
rows (as CSV: it reads no Parquet). Each tool runs as a child process; its wall time, and its
peak resident memory from ``wait4``'s rusage, are printed as one JSON line per tool, with its
start-up (the wall time of a 100-row run) and the rate once started, since importing
scikit-learn costs both tools seconds that have nothing to do with scoring. Everything is
written under a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
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


def line(tool: str, rows: int, seconds: float, rss_mb: float, **extra: object) -> str:
    return json.dumps({"tool": tool, "rows": rows, "seconds": round(seconds, 2),
                       "rows_per_second": round(rows / seconds), "peak_rss_mb": round(rss_mb, 1), **extra})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="rows to score (default: %(default)s)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow run")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        env = {**os.environ, "ARTIFACTS_DIR": str(folder / "artifacts"),
               "DATABASE_URL": f"sqlite:///{folder / 'store.db'}", "PYTHONPATH": str(REPO)}
        env.pop("LOG_LEVEL", None)
        subprocess.run([sys.executable, "-m", "service", "train-demo"], env=env, cwd=REPO, check=True,  # noqa: S603  # nosec B603  # our own command
                       stdout=subprocess.DEVNULL)
        parquet, csv = write_rows(folder, args.rows)
        tiny_parquet, tiny_csv = _tiny(folder, parquet)

        def score(source: Path, out: str) -> tuple[float, float, str]:
            return run([sys.executable, "-m", "service", "score", MODEL, str(source), str(folder / out)], env)

        startup = score(tiny_parquet, "tiny-scored.parquet")[0]
        seconds, rss, stdout = score(parquet, "scored.parquet")
        ours, ours_steady = args.rows / seconds, args.rows / max(seconds - startup, 1e-9)
        summary = json.loads(stdout.strip().splitlines()[-1])  # the run's own rate: start-up and hashing left out
        print(line("python -m service score", args.rows, seconds, rss, input="parquet", output="parquet",
                   validation=True, startup_seconds=round(startup, 2), rows_per_second_after_startup=round(ours_steady),
                   scoring_rows_per_second=summary["rows_per_second"]), flush=True)
        if args.no_mlflow or not _mlflow_importable():
            return
        model_dir = _save_for_mlflow(folder)
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"

        def predict(source: Path, out: str) -> tuple[float, float, str]:
            return run([mlflow, "models", "predict", "-m", str(model_dir), "-i", str(source), "-t", "csv",
                        "-o", str(folder / out), "--env-manager", "local"], env)

        startup = predict(tiny_csv, "tiny-mlflow.json")[0]
        seconds, rss, _ = predict(csv, "mlflow.json")
        theirs, theirs_steady = args.rows / seconds, args.rows / max(seconds - startup, 1e-9)
        print(line("mlflow models predict", args.rows, seconds, rss, input="csv", output="json", validation=False,
                   startup_seconds=round(startup, 2), rows_per_second_after_startup=round(theirs_steady),
                   ours_times_faster=round(ours / theirs, 2),
                   ours_times_faster_after_startup=round(ours_steady / theirs_steady, 2)), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tiny(folder: Path, parquet: Path) -> tuple[Path, Path]:
    """The first 100 rows, as Parquet and CSV: a run of them measures what a tool costs before its first row."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(parquet).read_row_group(0).slice(0, 100)
    pq.write_table(rows, folder / "tiny.parquet")
    rows.to_pandas().to_csv(folder / "tiny.csv", index=False)
    return folder / "tiny.parquet", folder / "tiny.csv"


def _mlflow_importable() -> bool:
    try:
        import mlflow.sklearn  # noqa: F401
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
