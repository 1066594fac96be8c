"""``python -m bench.memory``: what one more Gunicorn worker costs, and what ONNX Runtime's arena holds.

For each worker count (2 and 3 by default) the project's server starts as shipped over the bench's
models, every model answers 1- and 100-row requests on fresh connections until every worker has
served them, and ``/proc`` is read: each process's PSS, USS and RSS, and for the first and an
extra worker where their pages come from (``procstat.breakdown``). The target (issue 20): an
extra worker's USS, what it adds, is at most a quarter of the first worker's PSS. The share
depends on the worker count: the more processes share the master's pages, the smaller each one's
PSS, so it is printed for each. The arena is measured apart, in a fresh process per setting: every
ONNX version's session opened and run on the same rows with the CPU arena on, then off.
``python -m bench`` runs this as its memory phase; alone it trains the models first.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import models, procstat
from bench.server import REPO, Server, post
from bench.targets import EXTRA_WORKER_SHARE
from bench.workload import Scenario, build_scenarios

WORKER_COUNTS = (2, 3)
ROUNDS_PER_WORKER = 15  # warm-up requests per scenario and worker: enough that each worker served every model
SIZES = (1, 100)
ARENA_RUNS = 20


def scenarios(root: Path) -> list[Scenario]:
    """1- and 100-row requests for the demo models and the bench's forest and boosted model."""
    features = models.synthetic_data()[0]
    return build_scenarios(root, {models.FOREST: features, models.BOOSTED: features}, sizes=SIZES)


def measure_workers(root: Path, work: Path, workers: int, requests: list[Scenario], tree: Path = REPO) -> dict[str, Any]:
    """Start the server (of checkout ``tree``) with ``workers`` workers, warm every model up, read every process's memory."""
    server = Server(root, work / f"workers-{workers}", workers, tree=tree)
    try:
        server.start()
        for _ in range(ROUNDS_PER_WORKER * workers):
            for scenario in requests:
                status, body = post(server.url + scenario.path, scenario.body)
                if status != 200:
                    raise RuntimeError(f"{scenario.key}: HTTP {status}: {body[:200]!r}")
        time.sleep(0.5)  # let the recorder threads finish writing what the last answers handed them
        master = procstat.memory(server.pid)
        pids = procstat.children(server.pid)
        found = [m for m in (procstat.memory(pid) for pid in pids) if m is not None]
        if master is None or len(found) != workers:
            raise RuntimeError(f"{workers} workers expected, {len(found)} found")
        parts = {"first": procstat.breakdown(found[0].pid), "extra": procstat.breakdown(found[-1].pid)}
    finally:
        server.stop()
    first, extra = found[0], found[1:]
    extra_uss = sum(m.uss_mib for m in extra) / len(extra) if extra else None
    return {"workers": workers, "master": master.__dict__, "worker_memory": [m.__dict__ for m in found],
            "first_pss_mib": first.pss_mib, "extra_uss_mib": extra_uss,
            "share": extra_uss / first.pss_mib if extra_uss is not None and first.pss_mib else None,
            "total_pss_mib": master.pss_mib + sum(m.pss_mib for m in found), "breakdown": parts}


def _arena_child(root: str, requests: list[tuple[str, list[dict[str, Any]]]], arena: bool) -> dict[str, float]:
    """In a fresh process: USS growth (MiB) per ONNX version from opening its session and running the rows."""
    import os

    from service.models import artifacts, onnx_export
    from service.serving import runtime

    grown: dict[str, float] = {}
    for name in artifacts.list_models(Path(root)):
        for version in artifacts.list_versions(Path(root), name):
            model = runtime.load(artifacts.version_dir(Path(root), name, version), name=name, version=version)
            if model.backend != runtime.ONNX:
                continue
            before = procstat.memory(os.getpid())
            session = onnx_export.session(model.onnx_bytes, arena=arena)
            inputs = onnx_export.Inputs.of(model.features, model.manifest["backends"]["onnx"], session)
            for _ in range(ARENA_RUNS):
                for model_name, columns in requests:
                    if model_name == name:
                        session.run(None, inputs.feeds(columns))
            grown[f"{name}/{version}"] = procstat.memory(os.getpid()).uss_mib - before.uss_mib
    return grown


def measure_arena(root: Path, requests: list[Scenario]) -> dict[str, Any]:
    """Each ONNX version's session plus runs, with ONNX Runtime's CPU arena on and off (MiB of USS)."""
    rows = [(s.model, {c: s.frame[c].to_numpy() for c in s.frame.columns}) for s in requests]
    context = multiprocessing.get_context("spawn")  # a process of its own per setting, nothing inherited
    found = {}
    for arena in (True, False):
        with context.Pool(1) as pool:
            found["on" if arena else "off"] = pool.apply(_arena_child, (str(root), rows, arena))
    return found


def measure(root: Path, work: Path, counts: tuple[int, ...] = WORKER_COUNTS, tree: Path = REPO) -> dict[str, Any]:
    """Every worker count, then the arena; the figures ``lines`` prints."""
    requests = scenarios(root)
    runs = []
    for workers in counts:
        print(f"bench: memory with {workers} workers", file=sys.stderr, flush=True)
        runs.append(measure_workers(root, work, workers, requests, tree))
    return {"runs": runs, "arena_uss_mib": measure_arena(root, requests), "target": EXTRA_WORKER_SHARE}


def lines(found: dict[str, Any] | None) -> list[str]:
    """The memory phase as report lines."""
    if not found:
        return []
    out = [f"Memory after a warm-up of every model (MiB; target: an extra worker's USS <= "
           f"{found['target']:.0%} of the first worker's PSS)"]
    for run in found["runs"]:
        extra = "no extra worker" if run["share"] is None else (
            f"extra worker USS {run['extra_uss_mib']:.1f} = {run['share']:.0%} "
            f"({'met' if run['share'] <= found['target'] else 'MISSED'})")
        out.append(f"  {run['workers']} workers: first worker PSS {run['first_pss_mib']:.1f}, {extra}; "
                   f"total PSS {run['total_pss_mib']:.1f} (master {run['master']['pss_mib']:.1f})")
        for who, parts in run["breakdown"].items():
            if parts:
                cells = ", ".join(f"{kind} {v['uss_mib']:.1f}/{v['pss_mib']:.1f}" for kind, v in parts.items())
                out.append(f"    {who} worker USS/PSS by mapping: {cells}")
    arena = found["arena_uss_mib"]
    for version in arena.get("on", {}):
        on, off = arena["on"][version], arena["off"].get(version)
        out.append(f"  ONNX session + {ARENA_RUNS} runs per request, {version}: USS +{on:.1f} arena on, "
                   f"+{off:.1f} arena off")
    return out


def targets(found: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One target line per worker count, in ``bench.targets``' shape."""
    out = []
    for run in (found or {}).get("runs", []):
        share = run["share"]
        out.append({"target": f"memory per extra worker (USS) <= {EXTRA_WORKER_SHARE:.0%} of the first worker's PSS, "
                              f"{run['workers']} workers after a warm-up",
                    "measured": share, "limit": EXTRA_WORKER_SHARE, "at_most": True,
                    "shown": "not measured" if share is None else f"{share:.1%}",
                    "met": None if share is None else share <= EXTRA_WORKER_SHARE})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS), metavar="N",
                        help="worker counts to measure (default: 2 3)")
    parser.add_argument("--artifacts", type=Path, metavar="DIR",
                        help="the bench's models trained before (python -m bench.memory trains them otherwise)")
    parser.add_argument("--tree", type=Path, default=REPO, metavar="DIR",
                        help="the checkout whose server is measured (another worktree: a before/after run)")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.workers):
        parser.error("worker counts are positive whole numbers")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        root = args.artifacts or Path(scratch) / "artifacts"
        if args.artifacts is None:
            print("bench: training the bench's models", file=sys.stderr, flush=True)
            models.train_all(root)
        found = measure(root, Path(scratch), tuple(args.workers), args.tree.resolve())
    print("\n".join(lines(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
