"""``python -m bench.ab --tree PATH``: this checkout against another, next to the lean naive app and the floor.

The issue's table in one run: this checkout's server and another checkout's (``--tree``, say
``git worktree add ../base main``), each with monitoring on as the README starts it, the lean
naive app (``bench/lean_app.py``), the DataFrame one (``bench/naive_app.py``) and the floor, all
Gunicorn with gunicorn.conf.py, the same workers and thread limits, side by side on 127.0.0.1.
Every scenario (the bench's models at 1 and 100 rows by default) loads them in turn, for
``--rounds`` alternating rounds, so noise hits all alike; answers are checked first. Prints, per
scenario, the median over rounds of req/s and server CPU µs per request (the process tree,
from /proc), and the ratios the issue's targets name. Servers are stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from statistics import median

from bench import compare, load
from bench.compare import FLOOR, LEAN, NAIVE, SERVER, Variant
from bench.server import REPO, Server
from bench.workload import Scenario

BASE = "base"
MODELS = ("breast-cancer", "hist-gb", "random-forest")


def variants() -> tuple[Variant, ...]:
    """The servers of one run: ours, the other checkout's, the two naive apps and the floor."""
    by_name = {v.name: v for v in compare.VARIANTS}
    return (by_name[SERVER], Variant(BASE, "the other checkout (--tree), monitoring on"), by_name[LEAN],
            by_name[NAIVE], by_name[FLOOR])


def start(stack: contextlib.ExitStack, root: Path, work: Path, workers: int, tree: Path) -> dict[str, Server]:
    servers = {}
    for variant in variants():
        server = Server(root, work / variant.name, workers, dict(variant.env), app=variant.app,
                        tree=tree if variant.name == BASE else REPO)
        stack.callback(compare.drop_database, server.scratch)
        stack.callback(server.stop)
        server.start()
        servers[variant.name] = server
    return servers


def summary(runs: list[compare.Run]) -> dict[str, float | None]:
    """Median req/s and CPU µs per request over a server's rounds."""
    per_request = [r.cpu_us_per_request() for r in runs if r.cpu_us_per_request() is not None]
    return {"rps": median(r.load.requests_per_second for r in runs) if runs else None,
            "cpu_us": median(per_request) if per_request else None,
            "p50_ms": median(r.load.p50_ms for r in runs) if runs else None,
            "p99_ms": median(r.load.p99_ms for r in runs) if runs else None}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_scenario(scenario: Scenario, figures: dict[str, dict[str, float | None]]) -> str:
    lines = [f"== {scenario.model}, {scenario.rows} row(s)"]
    for name, f in figures.items():
        lines.append(f"  {name:8} {f['rps'] or 0:9,.0f} req/s  {f['cpu_us'] or 0:7,.0f} µs CPU/req  "
                     f"p50 {f['p50_ms'] or 0:6.2f} ms  p99 {f['p99_ms'] or 0:6.2f} ms")
    for name in (SERVER, BASE):
        f = figures.get(name, {})
        cpu_floor = ratio(f.get("cpu_us"), figures.get(FLOOR, {}).get("cpu_us"))
        rps_lean = ratio(f.get("rps"), figures.get(LEAN, {}).get("rps"))
        rps_naive = ratio(f.get("rps"), figures.get(NAIVE, {}).get("rps"))
        lines.append(f"  {name:8} CPU/req vs floor {cpu_floor or 0:.2f}x   req/s vs lean {rps_lean or 0:.2f}x   "
                     f"req/s vs naive {rps_naive or 0:.2f}x   p99/p50 {ratio(f.get('p99_ms'), f.get('p50_ms')) or 0:.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.models import train_all
    from bench.workload import build_scenarios

    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2; medians are printed)")
    args = parser.parse_args(argv)
    load.require_wrk()
    settings = load.LoadSettings(seconds=args.seconds, connections=args.connections, threads=1)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch, contextlib.ExitStack() as stack:
        work = Path(scratch)
        root = work / "artifacts"
        scenarios = [s for s in build_scenarios(root, train_all(root), tuple(args.rows)) if s.model in args.models]
        servers = start(stack, root, work, args.workers, args.tree.resolve())
        script = load.write_script(work)
        chosen = variants()
        passed, problems = compare.smoke_all(servers, chosen, scenarios, args.workers)
        for problem in problems:
            print(f"!! {problem}", file=sys.stderr)
        for scenario in (s for s in scenarios if s.key in passed):
            body_file = work / "body.json"
            body_file.write_bytes(scenario.body)
            runs: dict[str, list[compare.Run]] = {v.name: [] for v in chosen}
            for _ in range(args.rounds):
                for variant in chosen:
                    runs[variant.name].append(compare.measured_run(servers[variant.name], scenario, body_file, script,
                                                                   settings))
            print(format_scenario(scenario, {name: summary(r) for name, r in runs.items()}), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
