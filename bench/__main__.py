"""``python -m bench``: train the models, time them in process, then compare real servers under wrk.

Order matters on a 2-core machine: the in-process timings run first, while no server or wrk
competes for the CPU. Then five Gunicorn servers run side by side (this project with monitoring
on, the naive Flask app in ``bench/naive_app.py``, the lean one in ``bench/lean_app.py`` that
builds no DataFrame, the bare-stack floor in ``bench/floor_app.py``,
and this project with monitoring off) and every scenario loads them in turn, so machine noise
hits all alike; each run also reads the server's CPU from /proc. Last, three copies of the
project's server that differ only in worker recycling take the fastest scenario at more
connections, for p99. Every server gets its own temp folder for its SQLite store and Prometheus
files (deleted when it stops; its log is kept) and is stopped by pid even on failure. Between
the two, one more project server answers the same rows of the demo classifier in each wire
protocol (v1, V2 JSON, V2 binary, MLflow) and ``:explain`` next to ``:predict``; explain is
timed in process too. ``--model <m>`` (``make bench MODEL=<m>``) measures one packaged
model of ``ARTIFACTS_DIR`` instead, with rows drawn from its reference profile, and skips the
protocol and explain phases, which are about the demo models.
Progress goes to stderr, the report to stdout; the exit code is non-zero with a one-line
reason if a server did not start or any scenario saw a non-2xx answer. ``--help`` lists the
options; each falls back to its environment variable (what ``make bench`` passes), then to the
default here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess  # nosec B404  # only for subprocess.TimeoutExpired, raised by the runs in bench/
import sys
import tempfile
from pathlib import Path

from bench import compare, explaining, inprocess, load, log_cost, machine, memory, models, profiled, protocols, report
from bench.server import ServerError
from bench.workload import CLASSIFIER, Scenario, build_scenarios
from service.errors import ServiceError
from service.monitoring import metrics

DEFAULT_SECONDS = 6  # per wrk run; 12 scenarios x 4 servers plus the protocol phase keep the whole run under 10 minutes
DEFAULT_WORKERS = 2  # the target machine has 2 cores
QUICK_SECONDS = 2  # --quick: enough to see that everything answers, not to trust the figures
LATENCY_CONNECTIONS = 8  # the recycling runs: more connections than workers, so requests queue as in production
RECYCLING_SECONDS = 20  # per recycling setting: long enough for the shipped max_requests to replace workers
PHASE_DIVISOR = 3  # the protocol and explain runs (20 of them, one server) get a third of a comparison run's time
EXPLAINED = (CLASSIFIER, models.FOREST)  # explain is timed on the demo classifier and the 100-tree forest


def env_int(name: str, default: int) -> int:
    """A positive integer from the environment, or a one-line error naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"bench: {name} must be a positive whole number, got {raw!r}")
    return int(raw)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults stay None so the environment is read only when no flag is given."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the prediction server: train the demo models, time them in process, then "
                    "compare real Gunicorn servers with wrk on 127.0.0.1: this server with monitoring on and off, "
                    "two naive Flask apps on the same joblib files (one builds a DataFrame, the lean one a plain array), "
                    "and the bare Flask floor; then the wire protocols "
                    "(v1, V2 JSON and binary, MLflow) and :explain against :predict on one server; then worker recycling. "
                    "Progress goes to stderr, the table to stdout.",
        epilog="Exit status: 0 when every scenario answered 2xx, 1 otherwise (the scratch folder is kept).")
    parser.add_argument("--seconds", type=positive_int, metavar="N",
                        help=f"wrk duration per scenario (env BENCH_SECONDS, default {DEFAULT_SECONDS})")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help=f"Gunicorn workers (env BENCH_WORKERS, default {DEFAULT_WORKERS})")
    parser.add_argument("--connections", type=positive_int, metavar="N",
                        help="wrk connections (env BENCH_CONNECTIONS, default: one per worker)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short check: {QUICK_SECONDS} s per wrk run and short in-process timings "
                             "(figures are rough)")
    parser.add_argument("--model", metavar="NAME",
                        help="measure this packaged model of ARTIFACTS_DIR (default artifacts/) instead of the "
                             "bench's own, with rows from its reference profile (make bench MODEL=NAME)")
    parser.add_argument("--results", type=Path, default=report.RESULTS_FILE, metavar="PATH",
                        help="where the JSON results are written (default: bench/results/latest.json)")
    return parser


def load_settings(args: argparse.Namespace) -> tuple[int, load.LoadSettings]:
    """Workers and wrk settings; one connection per worker keeps queueing out of p50."""
    workers = args.workers or env_int("BENCH_WORKERS", DEFAULT_WORKERS)
    connections = args.connections or env_int("BENCH_CONNECTIONS", workers)
    seconds = args.seconds or (QUICK_SECONDS if getattr(args, "quick", False) else env_int("BENCH_SECONDS", DEFAULT_SECONDS))
    return workers, load.LoadSettings(seconds=seconds, connections=connections, threads=1)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def prepare(root: Path, model: str | None) -> list[Scenario]:
    """Train the bench's models, or copy the one asked for out of ARTIFACTS_DIR; return the scenarios."""
    if model is None:
        progress(f"training and packaging the bench models into {root}")
        return build_scenarios(root, models.train_all(root))
    source = Path(os.environ.get("ARTIFACTS_DIR", "artifacts"))
    version = profiled.copy_model(source, model, root)
    progress(f"measuring {model} version {version} (copied from {source} into {root}), rows from its reference profile")
    return profiled.scenarios_for(root, model, version)


def explain_in_process(root: Path, scenarios: list[Scenario], budget: float) -> list[dict]:
    frames = {s.model: s.frame for s in scenarios if s.model in EXPLAINED and s.rows == explaining.BATCH}
    progress(f"timing explain against predict in process: {', '.join(frames)}")
    return explaining.measure_all(root, frames, budget)


def run(work: Path, workers: int, settings: load.LoadSettings, quick: bool = False, model: str | None = None) -> dict:
    """The whole benchmark in a scratch folder; returns the results dict."""
    load.require_wrk()
    load_before = machine.load_average()
    # The in-process observer counts into multiprocess files, as a Gunicorn worker does.
    metrics.prepare_multiprocess_dir(work / "inprocess" / "prom")
    root = work / "artifacts"
    scenarios = prepare(root, model)
    budget = 0.05 if quick else inprocess.BUDGET_SECONDS
    progress("timing the in-process path and the writer's work per answer (single thread)")
    local = inprocess.measure_all(root, scenarios, work / "inprocess", budget=budget)
    for leftover in (work / "inprocess").glob("predictions.db*"):
        leftover.unlink(missing_ok=True)
    explained = None if model else explain_in_process(root, scenarios, budget)
    side_by_side = compare.compare(root, work / "servers", workers, scenarios, settings)
    wire = None
    if model is None:
        short = dataclasses.replace(settings, seconds=1 if quick else max(2, settings.seconds // PHASE_DIVISOR))
        wire = protocols.run_phase(root, work / "protocols", workers, scenarios, short, EXPLAINED)
    fastest = next(s for s in scenarios if s.model == (model or CLASSIFIER) and s.rows == 1)
    latency = dataclasses.replace(settings, connections=LATENCY_CONNECTIONS,
                                  seconds=settings.seconds if quick else max(settings.seconds, RECYCLING_SECONDS))
    recycled = compare.recycling(root, work / "servers", workers, fastest, latency)
    logged = None
    if model is None:
        progress("the prediction log's cost: log on against log off, at 1 and 10,000 rows")
        logged = log_cost.run(log_cost.REPO, log_cost.SIZES, 0.25 if quick else 1.0)
    held = None
    if model is None:
        progress("memory: what an extra worker adds, with 2 and 3 workers; ONNX Runtime's arena on and off")
        held = memory.measure(root, work / "memory")
    facts = machine.machine_facts(workers, load.wrk_version(), load_before)
    results = report.build_results(facts, settings, scenarios, local, side_by_side, recycled)
    results = report.add_phases(results, wire, explained) | {"log_cost": logged, "memory": held}
    results["targets"] += memory.targets(held)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, print, save; exit 1 with a one-line reason on any failure (scratch kept for inspection)."""
    args = build_parser().parse_args(argv)
    workers, settings = load_settings(args)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    ok = False
    try:
        results = run(work, workers, settings, args.quick, args.model)
        print(report.format_table(results))
        progress(f"results written to {report.write_json(results, args.results)}")
        ok = results["ok"]
        if not ok:
            print(f"bench failed: {results['failures'][0]}"
                  + (f" (+{len(results['failures']) - 1} more)" if len(results["failures"]) > 1 else ""), file=sys.stderr)
        return 0 if ok else 1
    except ServerError as exc:
        print(f"bench failed: server did not start: {exc}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ServiceError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"bench: scratch files (gunicorn log, bodies) kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
