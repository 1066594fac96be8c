"""``python -m bench.flood``: many clients sending full batches as fast as they can, and what the log keeps.

Replays the "one predict key can exhaust the machine" case: ``--clients`` threads each POST
``--rows``-row batches of the demo classifier for ``--seconds`` to a real Gunicorn (2 workers,
the shipped defaults), never waiting when told to (a hostile client ignores Retry-After). Then
it counts the answers by status and the rows the prediction log holds, with the database's
size. ``--env NAME=VALUE`` sets server settings, e.g. ``--env RATE_LIMIT_ROWS=10000``; run it
with and without to compare. All clients come from 127.0.0.1 without a key, so they share one
bucket, as one key's clients would. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
from sklearn.datasets import load_breast_cancer

from bench.server import Server, post
from service.models.demo import train_demo

MODEL = "breast-cancer"


def batch(rows: int) -> bytes:
    """A v1 body of ``rows`` records of the demo classifier's inputs."""
    data = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    records = data.sample(rows, replace=True, random_state=0).to_dict(orient="records")
    return orjson.dumps({"instances": records})


def flood(server: Server, body: bytes, clients: int, seconds: float) -> Counter:
    """POST ``body`` from ``clients`` threads until ``seconds`` pass; count the statuses."""
    statuses: Counter = Counter()
    lock, deadline = threading.Lock(), time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            status, _ = post(f"{server.url}/v1/models/{MODEL}:predict", body, timeout=120)
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def logged(database: Path) -> int:
    db = sqlite3.connect(database)
    try:
        return db.execute("SELECT coalesce(sum(rows), 0) FROM prediction_batches").fetchone()[0]
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="clients at once (default 16)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per request (default 10,000)")
    parser.add_argument("--seconds", type=float, default=30, help="how long (default 30)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a server setting")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as scratch:
        artifacts, folder = Path(scratch) / "artifacts", Path(scratch) / "server"
        folder.mkdir()
        print("training the demo models...", file=sys.stderr)
        train_demo(artifacts)
        body = batch(args.rows)
        server = Server(artifacts, folder, workers=2, extra_env=extra)
        server.start()
        try:
            started = time.monotonic()
            statuses = flood(server, body, args.clients, args.seconds)
            elapsed = time.monotonic() - started
        finally:
            server.stop()  # graceful: the workers write what they hold before they exit
        database = folder / "predictions.db"
        size = sum(p.stat().st_size for p in folder.glob("predictions.db*"))
        result = {"settings": extra, "clients": args.clients, "rows_per_request": args.rows,
                  "seconds": round(elapsed, 1), "statuses": dict(statuses), "rows_logged": logged(database),
                  "database_mib": round(size / 2**20, 1)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
