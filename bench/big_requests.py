"""``python -m bench.big_requests``: the traffic figures over a busy hour, unbounded read vs bounded.

Fills a SQLite ``requests`` table with ``--rows`` requests of the demo classifier spread over the
last hour (plain SQL inserts: 90% production on version 1, 10% canary on version 2, a few client
and server errors, fallbacks from 2 to 1), then runs each case in a fresh Python process and
prints its seconds and peak RSS (the high-water mark) as one JSON object per table size:

- ``figures_every_row``: ``version_figures(store.requests_since(...))``, the unbounded read;
- ``figures_bounded``: ``traffic_figures``, counts in SQL and the newest rows per version;
- ``report``: a fresh monitoring report of the model (``Monitoring.fresh_report``);
- ``guard``: one automatic-rollback evaluation of the canary (``auto_rollback.enforce``).

``--before PATH`` also runs ``report`` and ``guard`` on another checkout of the server (say,
``git archive <commit> | tar -x -C PATH``): the same cases on the code as it was. Every case
runs the same file as a script, so its top level imports nothing from ``service``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess  # nosec B404  # runs this file's own cases with this interpreter
import sys
import tempfile
import time
from pathlib import Path

MODEL = "breast-cancer"
WINDOW_SECONDS = 3600
CHUNK = 100_000
HERE = Path(__file__).resolve()
TREE = HERE.parent.parent
CASES = ("figures_every_row", "figures_bounded", "report", "guard")
BEFORE_CASES = ("figures_every_row", "report", "guard")  # what the code before bounded reads can run


def fill(database: Path, rows: int, now: float) -> float:
    """Write ``rows`` requests over the hour before ``now`` into ``database``; return the seconds taken."""
    import numpy as np

    from service.store import REQUEST_COLUMNS, Store

    started = time.perf_counter()
    store = Store(database)
    store.close()
    rng = np.random.default_rng(0)
    sql = store.insert_sql("requests", REQUEST_COLUMNS)

    db = sqlite3.connect(database)
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            ts = now - WINDOW_SECONDS + (np.arange(start, start + n) + 0.5) * (WINDOW_SECONDS / rows)
            canary = rng.random(n) < 0.10
            draw = rng.random(n)
            status = np.where(draw < 0.005, 422, np.where(draw < 0.013, 500, 200))
            fallback = canary & (status == 200) & (rng.random(n) < 0.02)
            latency = rng.gamma(2.0, 2.5, n) + np.where(canary, 1.0, 0.0)
            label = rng.integers(0, 2, n)
            db.executemany(sql, [
                (f"r{start + i}", float(ts[i]), MODEL, 1 if (fallback[i] or not canary[i]) else 2,
                 "fallback" if fallback[i] else ("canary" if canary[i] else "production"), int(status[i]),
                 float(latency[i]), 1, 2 if fallback[i] else None, "boom" if status[i] >= 400 else None,
                 None if status[i] >= 400 else f'{{"classes": {{"{label[i]}": 1}}}}')
                for i in range(n)])
            db.commit()
        db.execute("ANALYZE")
        db.commit()
    finally:
        db.close()
    return time.perf_counter() - started


def set_canary(root: Path) -> None:
    """Add a version 2 (a copy of 1) and make it the canary, with rules that hold (so every evaluation
    runs in full and acts never)."""
    import shutil

    from service.models import artifacts, registry

    source, target = artifacts.version_dir(root, MODEL, 1), artifacts.version_dir(root, MODEL, 2)
    shutil.copytree(source, target)
    manifest_path = target / artifacts.MANIFEST
    manifest_path.chmod(0o644)
    artifacts.write_json_atomic(manifest_path, {**artifacts.read_manifest(target), "version": 2}, mode=0o444)

    def change(state: dict) -> dict:
        state["labels"]["production"] = 1
        state["rollout"] = {"canary": {"version": 2, "weight": 10.0}, "shadow": [], "fallback": None,
                            "rules": {"window_seconds": WINDOW_SECONDS, "min_requests": 50,
                                      "max_error_rate": 0.5, "max_p99_ms": 1e6}}
        return {"action": "bench"}

    registry.update(root, MODEL, change, actor="bench")


def run_case(case: str, database: Path, root: Path, now: float) -> dict:
    """Run one case in this process; return its seconds and memory (MB)."""
    from service.store import Store

    store = Store(database)
    call = _case(case, store, root, now)
    before_mb = _status_mb("VmRSS")
    # Linux keeps getrusage's ru_maxrss across exec (this process would report the bench's own
    # peak), so the peak is the address space's high-water mark, reset here to the RSS of now.
    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    peak_mb = _status_mb("VmHWM")
    import service

    return {"seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1), "rss_before_mb": round(before_mb, 1),
            "result": result, "code": str(Path(service.__file__).parent.parent)}


def _case(case: str, store, root: Path, now: float):
    since = now - WINDOW_SECONDS
    if case == "figures_every_row":
        from service.models import comparison

        return lambda: _digest(comparison.version_figures(store.requests_since(MODEL, since)))
    if case == "figures_bounded":
        from service.models import comparison

        return lambda: _digest(comparison.traffic_figures(store, MODEL, since))
    if case == "report":
        from service.monitoring.predlog import PredictionLog
        from service.monitoring.report import Monitoring
        from service.serving.catalog import Catalog

        catalog = Catalog(root)
        catalog.refresh()
        monitoring = Monitoring(catalog, PredictionLog(store), 500)

        def report() -> dict:
            versions = monitoring.fresh_report(MODEL)["versions"]
            return {v: {"requests": s["traffic"]["requests"], "p99_ms": s["traffic"]["p99_ms"],
                        "minutes": len(s["traffic"]["timeline"])} for v, s in versions.items()}

        return report
    if case == "guard":
        from service.models import auto_rollback

        return lambda: {"rolled_back": auto_rollback.enforce(store, root, MODEL, now=now) is not None}
    raise ValueError(f"unknown case {case!r}")


def _digest(figures: dict) -> dict:
    return {str(v): {k: f.get(k) for k in ("requests", "errors", "p99_ms", "latency_sample")} for v, f in figures.items()}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def in_child(case: str, tree: Path, database: Path, root: Path, now: float) -> dict:
    """Run ``case`` in a fresh interpreter importing ``service`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(HERE), "--case", case, "--database", str(database), "--root", str(root), "--now", repr(now)]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)  # nosec B603  # noqa: S603  our own file
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.big_requests", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000], help="table sizes to run")
    parser.add_argument("--before", type=Path, help="another checkout to run report and guard on too")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--now", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.database, args.root, args.now)))
        return 0
    from service.models.demo import train_demo

    with tempfile.TemporaryDirectory(prefix="bench-big-requests-") as scratch:
        root = Path(scratch) / "artifacts"
        print("training the demo models...", file=sys.stderr)
        train_demo(root)
        set_canary(root)
        for rows in args.rows:
            database, now = Path(scratch) / f"requests-{rows}.db", time.time()
            print(f"writing {rows:,} requests...", file=sys.stderr)
            result: dict = {"rows": rows, "fill_seconds": round(fill(database, rows, now), 1)}
            for case in CASES:
                print(f"  {case}...", file=sys.stderr)
                result[case] = in_child(case, TREE, database, root, now)
            if args.before:
                for case in BEFORE_CASES:
                    print(f"  {case} (before)...", file=sys.stderr)
                    result[f"{case}_before"] = in_child(case, args.before.resolve(), database, root, now)
            print(json.dumps(result), flush=True)
            database.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
