"""``python -m bench.retrain``: the memory and time of ``retrain`` over a large prediction log, per row cap.

Builds the log as ``bench.big_log`` does (the demo classifier's real batch of 10,000 rows copied
with SQL until the log holds ``--rows`` predictions, every tenth labelled), writes the demo's
training split as the base file, then runs ``python -m service retrain breast-cancer`` once per
``--max-rows`` value in a process of its own and reports its peak resident memory (the kernel's
``ru_maxrss`` of that process) and wall time. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404  # noqa: S404  runs our own command line, argument list, no shell
import sys
import tempfile
import time
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from bench.big_log import MODEL, fill
from service.models.demo import SEED, train_demo

ROOT = Path(__file__).resolve().parents[1]


def run(artifacts: Path, database: Path, base: Path, max_rows: int) -> dict:
    """One retrain in its own process: exit code, peak RSS in MB, seconds and the rows it read."""
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts), "DATABASE_URL": f"sqlite:///{database}"}
    args = [sys.executable, "-m", "service", "retrain", MODEL, "--train", str(base), "--max-rows", str(max_rows),
            "--keep-failed", "--json", "--bootstrap", "200"]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.PIPE)  # nosec B603  # noqa: S603  our own command
        error = process.stderr.read().decode(errors="replace").strip().splitlines()  # type: ignore[union-attr]
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        report = json.loads(out.read() or b"{}")
    rows = report.get("rows", {}).get("production", {})
    return {"max_rows": max_rows, "exit": process.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "seconds": round(seconds, 1), "logged_rows_scanned": rows.get("scanned"),
            "labelled_rows_used": rows.get("labelled"), "capped": rows.get("capped"),
            **({"error": error[-1]} if process.returncode and error else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions in the log (default 1,000,000)")
    parser.add_argument("--max-rows", type=int, nargs="+", default=[10_000, 50_000, 200_000],
                        help="row caps to run with (default 10,000 50,000 200,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as scratch:
        artifacts, database, base = Path(scratch) / "artifacts", Path(scratch) / "predictions.db", Path(scratch) / "base.csv"
        print("training the demo models...", file=sys.stderr)
        train_demo(artifacts)
        data = load_breast_cancer(as_frame=True)
        X, _, y, _ = train_test_split(data.data, data.target, test_size=0.25, random_state=SEED, stratify=data.target)
        X.assign(target=y).to_csv(base, index=False)
        print(f"writing {args.rows:,} predictions...", file=sys.stderr)
        result: dict = {"rows": args.rows, "fill_seconds": round(fill(artifacts, database, args.rows), 1),
                        "database_mb": round(database.stat().st_size / 2**20, 1), "runs": []}
        for cap in args.max_rows:
            print(f"retrain --max-rows {cap:,}...", file=sys.stderr)
            result["runs"].append(run(artifacts, database, base, cap))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
