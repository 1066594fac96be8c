"""``python -m bench.batch``: batch scoring's rows per second and peak memory, against MLflow's.

Trains the demo models into a temporary folder, writes ``--rows`` rows (1,000,000 by default,
100,000 with ``--quick``, what ``make bench BENCH_ARGS=--quick`` runs) drawn from the demo
classifier's data set as Parquet (row groups of 100,000, as a data tool writes them) and as CSV,
and scores them with ``python -m service score`` (validation on, as always; Parquet in and out,
and the CSV file MLflow reads, into Parquet). When MLflow is importable, the same fitted estimator
is saved with ``mlflow.sklearn.save_model`` and ``mlflow models predict --env-manager local``
scores the CSV file (it reads no Parquet). The two tools run interleaved, ``--repeats`` times
each, with one environment (the same thread settings: OMP_NUM_THREADS and the like as this
process has them). When pyspark is importable, ``deploy/spark/score_files.py`` scores the Parquet
file once in local mode (``local[2]``).

Each run is a child process timed from its start to its exit (its output written); its peak memory
is the largest sum of resident memory over the process and all its descendants, sampled every 50 ms,
or the kernel's exact peak of one of them if larger. Each run prints one JSON line with the load
average at its start; the table gives each tool's median run and its ratio to MLflow's, and a
verdict against issue 22's targets (at least 5 times MLflow's rows/s with validation on, Parquet in;
peak memory at most 600 MB, with Parquet in and with CSV in). Compiling Python modules is where most
of a start-up goes without compiled bytecode: ``--bytecode cached`` (the default) keeps both tools'
compiled modules in a cache of the bench's own (``PYTHONPYCACHEPREFIX``), filled by a 100-row run of
each tool before the one that times its start-up, as an install that compiles its modules runs
(pip's default); ``--bytecode none`` runs as the environment says (with ``PYTHONDONTWRITEBYTECODE``
set and no compiled files, every run compiles every module it imports). Everything is written under
a temporary folder that is removed at the end.
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
import threading
import time
from pathlib import Path

from bench.procstat import children
from bench.server import REPO

MODEL = "breast-cancer"
ROWS = 1_000_000
QUICK_ROWS = 100_000
CLI, CLI_CSV = "python -m service score", "python -m service score (CSV in)"
SPARK, MLFLOW = "Spark local[2] (deploy/spark/score_files.py)", "mlflow models predict"
ROW_GROUP = 100_000
TARGET_TIMES, TARGET_RSS_MB = 5.0, 600.0
THREAD_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
POLL_SECONDS = 0.05


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


class TreeMemory:
    """The largest sum of resident memory over a process and its descendants, polled in a thread, or the
    largest peak of one of them (``VmHWM``, exact) if larger. ``wait4``'s ``ru_maxrss`` is no measure
    here: Linux carries the parent's resident size at fork into it, the bench's own with MLflow imported."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids, seen = [self.pid], 0
            while seen < len(pids):  # the whole tree, breadth first
                pids += children(pids[seen])
                seen += 1
            now = [_memory_mb(pid) for pid in pids]
            self.peak_mb = max(self.peak_mb, sum(rss for rss, _ in now), *(peak for _, peak in now))
            self._stop.wait(POLL_SECONDS)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def _memory_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and its peak so far, in MB (zeros once it is gone)."""
    found = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(tuple(found)):
                    found[line.split()[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass  # the process ended between the listing and the read
    return found["VmRSS:"], found["VmHWM:"]


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command`` to the end; return its wall seconds, its tree's peak RSS in MB and stdout (fail on a
    non-zero exit)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=err)  # noqa: S603  # nosec B603  # our own commands
        tree = TreeMemory(proc.pid)
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        peak = tree.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:4])} failed with exit code {proc.returncode}: {stderr[-2000:]}")
    return seconds, peak, stdout


def line(tool: str, rows: int, seconds: float, rss_mb: float, **extra: object) -> dict[str, object]:
    return {"tool": tool, "rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
            "peak_rss_mb": round(rss_mb, 1), **extra}


def median_runs(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """One line per tool, in the order tools first appear: the run of median seconds, with the number of runs."""
    tools = list(dict.fromkeys(str(r["tool"]) for r in results))
    chosen = []
    for tool in tools:
        runs = sorted((r for r in results if r["tool"] == tool), key=lambda r: float(r["seconds"]))
        chosen.append({**runs[(len(runs) - 1) // 2], "runs": len(runs),
                       "peak_rss_mb": max(float(r["peak_rss_mb"]) for r in runs)})
    return chosen


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


def verdict(results: list[dict[str, object]]) -> str:
    """The command line's median runs against the issue's targets: its rows/s with Parquet in against
    MLflow's, and its peak memory with Parquet in and, when it ran, with CSV in."""
    cli = next((r for r in results if r["tool"] == CLI), None)
    csv = next((r for r in results if r["tool"] == CLI_CSV), None)
    mlflow = next((r for r in results if r["tool"] == MLFLOW), None)
    if cli is None:
        return "verdict: no run of the command line"
    memory = _memory(cli) + (f"; CSV in: {_memory(csv)}" if csv is not None else "")
    if mlflow is None:
        return f"verdict: no MLflow run to compare with; {memory}"
    times = float(cli["rows_per_second"]) / float(mlflow["rows_per_second"])
    speed = f"{times:.2f}x MLflow's rows/s, target >= {TARGET_TIMES:.0f}x: {'met' if times >= TARGET_TIMES else 'NOT met'}"
    return f"verdict: {speed}; {memory}"


def _memory(result: dict[str, object]) -> str:
    rss = float(result["peak_rss_mb"])  # type: ignore[arg-type]
    return f"peak RSS {rss:.0f} MB, target <= {TARGET_RSS_MB:.0f}: {'met' if rss <= TARGET_RSS_MB else 'NOT met'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help=f"rows to score (default: {ROWS:,}; --quick: {QUICK_ROWS:,})")
    parser.add_argument("--quick", action="store_true", help="fewer rows: a run of a few minutes")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tool, interleaved (default: 2)")
    parser.add_argument("--bytecode", choices=("cached", "none"), default="cached",
                        help="cached: both tools' compiled modules kept in a cache of the bench's (default); "
                             "none: as the environment says")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow runs")
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
        if args.bytecode == "cached":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / "bytecode")
        settings = {"bytecode": args.bytecode, **{name: env.get(name) for name in THREAD_SETTINGS}}
        subprocess.run([sys.executable, "-m", "service", "train-demo"], env=env, cwd=REPO, check=True,  # noqa: S603  # nosec B603  # our own command
                       stdout=subprocess.DEVNULL)
        parquet, csv = write_rows(folder, rows)
        tiny_parquet, tiny_csv = _tiny(folder, parquet)
        mlflow = None if args.no_mlflow or not _importable("mlflow.sklearn") else _MLflow(folder, env)

        def score(source: Path, out: str) -> tuple[float, float, str]:
            return run([sys.executable, "-m", "service", "score", MODEL, str(source), str(folder / out), "--overwrite"],
                       env)

        for _ in range(2 if args.bytecode == "cached" else 1):  # the first fills the bytecode cache
            cli_startup = score(tiny_parquet, "tiny-scored.parquet")[0]
            mlflow_startup = mlflow.predict(tiny_csv, "tiny-mlflow.json")[0] if mlflow else None
        for attempt in range(1, args.repeats + 1):
            load = _load()
            seconds, rss, stdout = score(parquet, "scored.parquet")
            summary = json.loads(stdout.strip().splitlines()[-1])  # the run's own rate: start-up and hashing left out
            report(line(CLI, rows, seconds, rss, input="parquet", output="parquet", validation=True, run=attempt,
                        load_at_start=load, startup_seconds=round(cli_startup, 2),
                        rows_per_second_after_startup=_after(rows, seconds, cli_startup),
                        scoring_rows_per_second=summary["rows_per_second"], **settings))
            if mlflow is not None:
                load = _load()
                seconds, rss, _ = mlflow.predict(csv, "mlflow.json")
                report(line(MLFLOW, rows, seconds, rss, input="csv", output="json", validation=False, run=attempt,
                            load_at_start=load, startup_seconds=round(mlflow_startup, 2),
                            rows_per_second_after_startup=_after(rows, seconds, mlflow_startup), **settings))
                load = _load()
                seconds, rss, _ = score(csv, "scored-from-csv.parquet")
                report(line(CLI_CSV, rows, seconds, rss, input="csv", output="parquet", validation=True, run=attempt,
                            load_at_start=load, **settings))
        if not args.no_spark and _importable("pyspark"):
            report(_spark(folder, parquet, rows, env))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    medians = median_runs(results)
    print()
    print(f"median of {args.repeats} run(s) per tool (Spark: one); peak RSS: the largest of a tool's runs; "
          f"bytecode {args.bytecode}; load average {_load()}")
    for text in table(medians):
        print(text)
    print(verdict(medians))


class _MLflow:
    """``mlflow models predict`` on the production version's estimator, saved as an MLflow model."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.model_dir = _save_for_mlflow(folder)
        self.command = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"

    def predict(self, source: Path, out: str) -> tuple[float, float, str]:
        return run([self.command, "models", "predict", "-m", str(self.model_dir), "-i", str(source), "-t", "csv",
                    "-o", str(self.folder / out), "--env-manager", "local"], self.env)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _after(rows: int, seconds: float, startup: float | None) -> int | None:
    """The rate once started; None when the start-up run took as long (a machine too busy to tell)."""
    return round(rows / (seconds - startup)) if startup is not None and seconds > startup else None


def _spark(folder: Path, parquet: Path, rows: int, env: dict[str, str]) -> dict[str, object]:
    """``deploy/spark/score_files.py`` in local mode (two cores) on the same Parquet file; its own summary
    gives the rate from the first row scored to the last file written and the rows counted, the JVM's
    start-up, the model's load on the driver and the run's record left out."""
    spark_env = {**env, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    load = _load()
    seconds, rss, stdout = run([sys.executable, str(REPO / "deploy" / "spark" / "score_files.py"), MODEL,
                                str(parquet), str(folder / "spark-out"), "--master", "local[2]"], spark_env)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return line(SPARK, rows, seconds, rss, input="parquet", output="parquet", validation=True, load_at_start=load,
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
