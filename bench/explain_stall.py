"""Do explanations stall a server? Parallel :explain calls on a 100-tree forest, /healthz probed meanwhile.

The default server (2 sync workers) serves the bench's RandomForest(100). Two explanations of
``--rows`` rows (1,000 by default) go at once, then rounds of two at the row limit the version's
metadata shows; ``/healthz`` is probed every 200 ms throughout. It prints each call's status and
time and the slowest probe. ``--repo`` serves another checkout of the project (an older commit,
to compare), with the same models. Traffic goes to loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bench.big_log import get
from bench.models import FOREST, train_all
from bench.server import HOST, REPO, Server, post

PROBE_EVERY = 0.2
T = TypeVar("T")


def probing(url: str, work: Callable[[], T], every: float = PROBE_EVERY) -> tuple[T, list[float]]:
    """Run ``work`` while a thread GETs ``url``/healthz every ``every`` seconds; return its result and the probe times."""
    done, probes = threading.Event(), []

    def probe() -> None:
        while not done.is_set():
            probes.append(get(f"{url}/healthz", timeout=120)[1])
            done.wait(every)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        result = work()
    finally:
        done.set()
        prober.join()
    return result, probes


def explain_at_once(url: str, model: str, rows: list[list[float]], parallel: int) -> list[dict[str, Any]]:
    """``parallel`` identical explanations at once; each one's status, seconds and body."""
    body = json.dumps({"instances": rows, "parameters": {"probabilities": True}}).encode()

    def call(_: int) -> dict[str, Any]:
        started = time.perf_counter()
        status, answer = post(f"{url}/v1/models/{model}:explain", body, timeout=300)
        return {"status": status, "seconds": round(time.perf_counter() - started, 3), "body": json.loads(answer)}

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(call, range(parallel)))


def row_limit(url: str, model: str) -> int | None:
    """The row limit version 1's metadata shows (None from a server that shows none)."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"the bench only talks to {HOST}")
    with urllib.request.urlopen(f"{url}/v1/models/{model}/versions/1", timeout=30) as response:  # nosec B310  # noqa: S310  loopback only, checked above
        about = json.loads(response.read()).get("explanations") or {}
    return about.get("max_rows")


def scenario(url: str, model: str, rows: list[list[float]], big: int, rounds: int = 3,
             at: int | None = None) -> dict[str, Any]:
    """Two explanations of ``big`` rows, then ``rounds`` of two at the row limit (or ``at`` rows), /healthz probed."""
    limit = at or row_limit(url, model)
    out: dict[str, Any] = {"row_limit": limit}

    def work() -> dict[str, Any]:
        result = {"big": explain_at_once(url, model, rows[:big], 2)}
        if limit is not None:
            result["at_limit"] = [explain_at_once(url, model, rows[:limit], 2) for _ in range(rounds)]
        return result

    calls, probes = probing(url, work)
    out.update(calls, healthz_max_s=max(probes), healthz_probes=len(probes))
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The scenario without the answers' bodies (codes of refusals kept)."""
    def brief(call: dict[str, Any]) -> dict[str, Any]:
        error = call["body"].get("error") if isinstance(call["body"], dict) else None
        return {"status": call["status"], "seconds": call["seconds"], **({"code": error["code"]} if error else {})}

    out = {k: v for k, v in result.items() if k not in ("big", "at_limit")}
    out["big"] = [brief(c) for c in result["big"]]
    if "at_limit" in result:
        out["at_limit"] = [[brief(c) for c in pair] for pair in result["at_limit"]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain_stall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of the two big explanations (default 1,000)")
    parser.add_argument("--at", type=int, default=None,
                        help="rows of the later pairs (default the row limit the metadata shows)")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose server is measured (default this one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as scratch:
        artifacts, folder = Path(scratch) / "artifacts", Path(scratch) / "server"
        folder.mkdir()
        print("training the bench models...", file=sys.stderr)
        frames = train_all(artifacts)
        rows = frames[FOREST].head(args.rows).to_numpy().tolist()
        server = Server(artifacts, folder, workers=2, tree=args.repo.resolve())
        server.start()
        try:
            result = summary(scenario(server.url, FOREST, rows, args.rows, at=args.at))
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
