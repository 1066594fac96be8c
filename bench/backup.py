"""``python -m bench.backup``: what a backup costs serving: p99 of 1-row predicts before and during one.

Builds a log of ``--rows`` predictions of the demo classifier the way ``bench.big_log`` does, serves
it with the shipped Gunicorn defaults (2 workers), and keeps ``--clients`` clients sending 1-row
predicts one after another: ``--seconds`` before the backup, then throughout ``python -m service
backup`` (a real process, as an operator runs it). Prints one JSON object: latency percentiles of
both phases, the backup's duration and size. Run it from any checkout; everything lives in a temp
folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404  # the service's own command line, fixed arguments
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from bench.big_log import fill
from bench.server import Server, post
from service.models.demo import train_demo

MODEL = "breast-cancer"


def percentiles(seconds: list[float]) -> dict[str, float | int]:
    values = np.array(seconds) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2), "max_ms": round(float(values.max()), 2)}


class Clients:
    """``n`` threads predicting one row at a time; ``mark`` starts a new phase of latencies."""

    def __init__(self, url: str, n: int):
        self.url, self.stop, self.phase = url, threading.Event(), "warmup"
        self.latencies: dict[str, list[float]] = {}
        self.failures = 0
        self.body = json.dumps({"instances": load_breast_cancer().data[:1].tolist()}).encode()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            status, _ = post(f"{self.url}/v1/models/{MODEL}:predict", self.body)
            phase = self.phase
            self.latencies.setdefault(phase, []).append(time.perf_counter() - started)
            self.failures += status != 200

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions in the log (default 1,000,000)")
    parser.add_argument("--clients", type=int, default=2, help="clients predicting at once (default 2)")
    parser.add_argument("--seconds", type=float, default=20.0, help="the phase before the backup (default 20 s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as scratch:
        artifacts, folder = Path(scratch) / "artifacts", Path(scratch) / "server"
        folder.mkdir()
        print("training the demo models...", file=sys.stderr)
        train_demo(artifacts)
        print(f"writing {args.rows:,} predictions...", file=sys.stderr)
        fill(artifacts, folder / "predictions.db", args.rows)
        server = Server(artifacts, folder, workers=2)
        server.start()
        try:
            result = run(server, folder, Path(scratch) / "backups", args)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    return 0


def run(server: Server, folder: Path, dest: Path, args: argparse.Namespace) -> dict:
    clients = Clients(server.url, args.clients)
    time.sleep(3.0)  # warm-up: first requests of each worker
    clients.phase = "before"
    time.sleep(args.seconds)
    clients.phase = "during"
    env = {**os.environ, "ARTIFACTS_DIR": str(server.artifacts), "DATABASE_URL": f"sqlite:///{folder / 'predictions.db'}",
           "AUDIT_CHECKPOINT_FILE": str(folder / "checkpoints.jsonl")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "service", "backup", str(dest)], capture_output=True, text=True,  # nosec B603  # noqa: S603  # our own CLI
                          env=env, timeout=3600, check=False)
    seconds = time.perf_counter() - started
    clients.phase = "after"
    clients.close()
    if done.returncode != 0:
        raise SystemExit(f"backup failed: {done.stderr.strip()}")
    backup = Path(done.stdout.strip())
    size = sum(p.stat().st_size for p in backup.rglob("*") if p.is_file())
    return {"rows": args.rows, "clients": args.clients, "backup_seconds": round(seconds, 2),
            "backup_mib": round(size / 2**20, 1), "store_mib": round((folder / "predictions.db").stat().st_size / 2**20, 1),
            "failures": clients.failures, "before": percentiles(clients.latencies["before"]),
            "during": percentiles(clients.latencies.get("during", [0.0])), "backup_says": done.stderr.strip()}


if __name__ == "__main__":
    sys.exit(main())
