"""``python -m bench.big_log``: monitoring reports over a 3-million-row prediction log, and /healthz meanwhile.

Builds the log without HTTP: the demo classifier's prediction path records one real batch of
10,000 rows (``PredictionLog.record``, so the layout is the server's own), then plain SQL copies
that batch until the log holds ``--rows`` predictions (every tenth with feedback). Then a real
Gunicorn with the shipped defaults (2 workers, 1 thread each) serves that database and the
bench times ``GET /v1/models/breast-cancer/monitoring?window=N``: one call at a time (the first
per worker computes, a repeat may be cached), then ``--parallel`` calls at once while a client
asks ``/healthz`` every 100 ms. Prints one JSON object. Run it from any checkout to compare two
versions of the server; the database is built once per run in a temp folder.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from bench.server import HOST, Server
from service.models.demo import train_demo
from service.monitoring.predlog import PredictionLog
from service.store import Store

MODEL = "breast-cancer"
BATCH = 10_000
SPACING = 1.0  # seconds between two copied batches


def fill(artifacts: Path, database: Path, rows: int) -> float:
    """Write ``rows`` predictions of the demo classifier (version 1) into ``database``; return the seconds taken."""
    started = time.perf_counter()
    manifest = json.loads((artifacts / MODEL / "1" / "manifest.json").read_text())
    features = manifest["input"]["features"]
    data = load_breast_cancer(as_frame=True).frame
    picks = np.random.default_rng(0).integers(0, len(data), BATCH)
    columns = {f["name"]: data[f["name"]].to_numpy()[picks] for f in features}
    predictions = data["target"].to_numpy()[picks]
    probabilities = np.column_stack([1.0 - predictions, predictions]).astype(float)
    store = Store.from_url(f"sqlite:///{database}")
    now = time.time()
    copies = max(1, rows // BATCH)
    ids = [f"seed-{i}" for i in range(BATCH)]
    if not PredictionLog(store).record(MODEL, 1, "seed", ids, columns, predictions, probabilities, 1.0, features,
                                       now=now - copies * SPACING):
        raise RuntimeError("the seed batch could not be recorded")
    store.close()
    _copy(database, copies - 1)
    return time.perf_counter() - started


def _copy(database: Path, copies: int) -> None:
    """Copy the seed batch ``copies`` times with SQL, each a second later, with new ids."""
    db = sqlite3.connect(database)
    try:
        batch_columns = [r[1] for r in db.execute("PRAGMA table_info(prediction_batches)") if r[1] != "batch"]
        seed = db.execute("SELECT batch FROM prediction_batches").fetchone()[0]
        with db:
            for k in range(1, copies + 1):
                copied = {"ts": f"ts + {k * SPACING}", "base": f"base || '.{k}'"}
                shown = ", ".join(copied.get(c, c) for c in batch_columns)
                db.execute(f"INSERT INTO prediction_batches ({', '.join(batch_columns)}) "  # nosec B608  # noqa: S608  names from PRAGMA
                           f"SELECT {shown} FROM prediction_batches WHERE batch = ?", (seed,))
            # a label for every tenth row of every batch (the seed's rows are 0..rows-1: unsampled)
            db.execute("INSERT INTO feedback (id, ts, label, model) SELECT b.base || '-' || (n.value * 10), b.ts + 1, '1', "
                       "b.model FROM prediction_batches b "
                       "JOIN (WITH RECURSIVE c(value) AS (SELECT 0 UNION ALL SELECT value + 1 FROM c WHERE value < 99999) "
                       "SELECT value FROM c) AS n ON n.value * 10 < b.rows")
        db.execute("ANALYZE")
    finally:
        db.close()


def get(url: str, timeout: float = 300.0) -> tuple[int, float]:
    """GET ``url`` on the bench server; return (status, seconds)."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"the bench only talks to {HOST}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310  # noqa: S310  loopback only
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, round(time.perf_counter() - started, 3)


def under_load(server: Server, window: int, parallel: int) -> dict:
    """``parallel`` monitoring calls at once, and /healthz every 100 ms until they are all answered."""
    done, probes = threading.Event(), []

    def probe() -> None:
        while not done.is_set():
            probes.append(get(f"{server.url}/healthz")[1])
            done.wait(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    with ThreadPoolExecutor(parallel) as pool:
        calls = list(pool.map(lambda _: get(f"{server.url}/v1/models/{MODEL}/monitoring?window={window}"),
                              range(parallel)))
    done.set()
    prober.join()
    return {"calls": calls, "healthz_max_s": max(probes), "healthz_median_s": round(statistics.median(probes), 3),
            "healthz_probes": len(probes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.big_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="predictions in the log (default 3,000,000)")
    parser.add_argument("--window", type=int, default=100_000, help="the window asked for (default 100,000)")
    parser.add_argument("--parallel", type=int, default=4, help="calls at once (default 4)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-big-log-") as scratch:
        artifacts, folder = Path(scratch) / "artifacts", Path(scratch) / "server"
        folder.mkdir()
        print("training the demo models...", file=sys.stderr)
        train_demo(artifacts)
        print(f"writing {args.rows:,} predictions...", file=sys.stderr)
        result: dict = {"rows": args.rows, "fill_seconds": round(fill(artifacts, folder / "predictions.db", args.rows), 1)}
        server = Server(artifacts, folder, workers=2)
        server.start()
        try:
            url = f"{server.url}/v1/models/{MODEL}/monitoring?window={args.window}"
            result["one_at_a_time"] = [get(url) for _ in range(3)]
            result["healthz_idle_s"] = get(f"{server.url}/healthz")[1]
            result["parallel_same_window"] = under_load(server, args.window, args.parallel)
            result["parallel_new_window"] = under_load(server, args.window - 1, args.parallel)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
