"""``python -m bench.log_cost``: what the prediction log costs the server, log on against log off.

Two Gunicorn servers of one checkout run side by side on 127.0.0.1, the same in everything but
``PREDICTION_LOG_SAMPLE`` (1, the default, against 0: the rest of monitoring stays on in both).
For each size (1 and 10,000 rows of the demo classifier by default) they take the same requests
in alternating rounds, one request at a time, so machine noise hits both alike; the CPU of each
server's process tree (workers and their background writer threads, from /proc) is read over
the rounds, with a pause at the end of each so the writer has finished what the requests queued.
Prints one JSON object per size: CPU microseconds per request with the log on and off, and the
overhead in percent. ``--tree PATH`` serves another checkout (say the commit before a change,
``git worktree add PATH <commit>``) with this bench. Load is bounded (``--requests``) and goes to
loopback only; servers are stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench import procstat
from bench.server import REPO, Server, post

MODEL = "breast-cancer"
SIZES = (1, 10_000)
#: Requests per size and server: about the same work (rows) per size, bounded either way.
REQUESTS = {1: 600, 10_000: 24}
ROUNDS = 6
SETTLE_SECONDS = 0.5  # after each round: the writer thread finishes what the round queued
VARIANTS = {"log_on": {}, "log_off": {"PREDICTION_LOG_SAMPLE": "0"}}


def body(rows: int) -> bytes:
    """``rows`` instances of the demo classifier's data set, in schema order."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    return orjson.dumps({"instances": [data[i % len(data)].tolist() for i in range(rows)]})


def overhead(on_us: float, off_us: float) -> float:
    """The log's share of the server's CPU per request, in percent of the log-off figure."""
    return (on_us - off_us) / off_us * 100.0


def measure(servers: dict[str, Server], rows: int, requests: int) -> dict[str, float]:
    """CPU microseconds per request of each server, over alternating rounds of the same requests."""
    payload = body(rows)
    path = f"/v1/models/{MODEL}:predict"
    for server in servers.values():  # warm: lazy sessions, the writer thread, SQLite pages
        for _ in range(3):
            post(server.url + path, payload)
        time.sleep(SETTLE_SECONDS)
    cpu = dict.fromkeys(servers, 0.0)
    per_round = max(1, requests // ROUNDS)
    for _ in range(ROUNDS):
        for name, server in servers.items():
            with procstat.CpuSampler(server.pid) as sampler:
                for _ in range(per_round):
                    status, answer = post(server.url + path, payload)
                    if status != 200:
                        raise RuntimeError(f"{name}: HTTP {status}: {answer[:200]!r}")
                time.sleep(SETTLE_SECONDS)
            cpu[name] += sampler.total()
    return {name: seconds * 1e6 / (per_round * ROUNDS) for name, seconds in cpu.items()}


def run(tree: Path, sizes: tuple[int, ...], scale: float) -> list[dict]:
    from service.models.demo import train_demo

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-log-cost-") as scratch, contextlib.ExitStack() as stack:
        root = Path(scratch) / "artifacts"
        train_demo(root)
        servers = {}
        for name, env in VARIANTS.items():
            server = Server(root, Path(scratch) / name, 1, dict(env), tree=tree)
            stack.callback(server.stop)
            server.start()
            servers[name] = server
        for rows in sizes:
            requests = max(ROUNDS, round(REQUESTS.get(rows, 24) * scale))
            print(f"{rows} rows: {requests} requests per server...", file=sys.stderr, flush=True)
            us = measure(servers, rows, requests)
            results.append({"rows": rows, "requests": requests, "tree": str(tree),
                            "cpu_us_per_request_log_on": round(us["log_on"]),
                            "cpu_us_per_request_log_off": round(us["log_off"]),
                            "overhead_percent": round(overhead(us["log_on"], us["log_off"]), 1)})
            print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.log_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout to serve (default: this one)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES), help="request sizes (default 1 10000)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the requests per size (default 1)")
    args = parser.parse_args(argv)
    run(args.tree.resolve(), tuple(args.rows), args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
