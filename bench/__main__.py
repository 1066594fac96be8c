"""``python -m bench``: train the demo models, time them in process, then load a real server.

Order matters on a 2-core machine: the in-process timings run first, while no server or wrk
competes for the CPU; the server then runs only for the wrk scenarios and is always stopped.
A second server, identical but for ``PREDICTION_LOG_SAMPLE=0``, then runs the classifier's
scenarios again for the same time, so the cost of the prediction log on a real server is the
difference between two runs that differ in nothing else. Every server gets its own temp folder
for its SQLite store and Prometheus files (deleted when it stops; its log is kept).
Progress goes to stderr, the report to stdout; the exit code is non-zero with a one-line
reason if a server did not start or any scenario saw a non-2xx answer. ``--help`` lists the
options; each falls back to its environment variable (what ``make bench`` passes), then to the
default here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from bench import inprocess, load, machine, report
from bench.server import Server, ServerError, post
from bench.workload import CLASSIFIER, Scenario, build_scenarios
from service.errors import ServiceError
from service.models.demo import train_demo
from service.monitoring import metrics

DEFAULT_SECONDS = 8  # per wrk scenario; 10 scenarios keep the whole run near 2.5 minutes
DEFAULT_WORKERS = 2  # the target machine has 2 cores
LOG_AB_MODEL = CLASSIFIER  # the model run with the prediction log on and off (30 features: the wider log rows)


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
                    "load a real Gunicorn with wrk on 127.0.0.1 (once with the prediction log on, once off). "
                    "Progress goes to stderr, the table to stdout.",
        epilog="Exit status: 0 when every scenario answered 2xx, 1 otherwise (the scratch folder is kept).")
    parser.add_argument("--seconds", type=positive_int, metavar="N",
                        help=f"wrk duration per scenario (env BENCH_SECONDS, default {DEFAULT_SECONDS})")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help=f"Gunicorn workers (env BENCH_WORKERS, default {DEFAULT_WORKERS})")
    parser.add_argument("--connections", type=positive_int, metavar="N",
                        help="wrk connections (env BENCH_CONNECTIONS, default: one per worker)")
    parser.add_argument("--results", type=Path, default=report.RESULTS_FILE, metavar="PATH",
                        help="where the JSON results are written (default: bench/results/latest.json)")
    return parser


def load_settings(args: argparse.Namespace) -> tuple[int, load.LoadSettings]:
    """Workers and wrk settings; one connection per worker keeps queueing out of p50."""
    workers = args.workers or env_int("BENCH_WORKERS", DEFAULT_WORKERS)
    connections = args.connections or env_int("BENCH_CONNECTIONS", workers)
    seconds = args.seconds or env_int("BENCH_SECONDS", DEFAULT_SECONDS)
    return workers, load.LoadSettings(seconds=seconds, connections=connections, threads=1)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def smoke_check(server: Server, scenario: Scenario, repeats: int) -> str | None:
    """Send the body a few times (warming every worker) and check the answer; return a problem or None."""
    for _ in range(repeats):
        status, body = post(server.url + scenario.path, scenario.body)
        if status != 200:
            return f"{scenario.key}: smoke request got HTTP {status}: {body[:200].decode(errors='replace')}"
    predictions = orjson.loads(body).get("predictions", [])
    if len(predictions) != scenario.rows:
        return f"{scenario.key}: smoke request got {len(predictions)} predictions for {scenario.rows} rows"
    return None


def run_load(server: Server, scenarios: list[Scenario], settings: load.LoadSettings,
             folder: Path) -> tuple[dict[str, load.LoadResult], list[str]]:
    """Run wrk for every scenario that passes its smoke check; collect results and problems."""
    script = load.write_script(folder)
    results: dict[str, load.LoadResult] = {}
    problems: list[str] = []
    for scenario in scenarios:
        problem = smoke_check(server, scenario, repeats=2 * server.workers)
        if problem:
            problems.append(problem)
            progress(f"!! {problem}")
            continue
        body_file = folder / f"{scenario.key.replace('/', '_')}.json"
        body_file.write_bytes(scenario.body)
        progress(f"wrk {scenario.key} for {settings.seconds} s")
        results[scenario.key] = load.run_wrk(server.url + scenario.path, body_file, script, settings)
    return results, problems


def serve_and_load(name: str, root: Path, work: Path, workers: int, scenarios: list[Scenario],
                   settings: load.LoadSettings, extra_env: dict[str, str] | None = None,
                   ) -> tuple[dict[str, load.LoadResult], list[str], int]:
    """Start one server in its own scratch folder, run the scenarios, stop it; drop its database."""
    server = Server(root, work / name, workers, dict(extra_env or {}))
    settings_note = " ".join(f"{k}={v}" for k, v in server.extra_env.items())
    progress(f"starting gunicorn ({name}{', ' + settings_note if settings_note else ''}) "
             f"with {workers} workers on {server.url}")
    try:
        server.start()
        remote, problems = run_load(server, scenarios, settings, work)
    finally:
        server.stop()
        for leftover in server.scratch.glob("predictions.db*"):  # gigabytes after 10,000-row runs
            leftover.unlink(missing_ok=True)
    return remote, [f"{name}: {p}" for p in problems], server.worker_boots()


def run(work: Path, workers: int, settings: load.LoadSettings) -> dict:
    """The whole benchmark in a scratch folder; returns the results dict."""
    load.require_wrk()
    load_before = machine.load_average()
    # The in-process observer counts into multiprocess files, as a Gunicorn worker does.
    metrics.prepare_multiprocess_dir(work / "inprocess" / "prom")
    root = work / "artifacts"
    progress(f"training the demo models into {root}")
    train_demo(root)
    scenarios = build_scenarios(root)
    progress("timing the in-process path and the work after the answer (single thread)")
    local = inprocess.measure_all(root, scenarios, work / "inprocess")
    for leftover in (work / "inprocess").glob("predictions.db*"):
        leftover.unlink(missing_ok=True)
    remote, problems, boots = serve_and_load("server", root, work, workers, scenarios, settings)
    ab_scenarios = [s for s in scenarios if s.model == LOG_AB_MODEL and not s.probabilities]
    unlogged, more_problems, more_boots = serve_and_load("server-log-off", root, work, workers, ab_scenarios, settings,
                                                         {"PREDICTION_LOG_SAMPLE": "0"})
    records = [report.scenario_record(s, remote.get(s.key), local[s.key]) for s in scenarios]
    log_ab = report.log_ab_records(ab_scenarios, remote, unlogged)
    facts = machine.machine_facts(workers, load.wrk_version(), load_before)
    return report.build_results(facts, settings, records, {"server": boots, "server-log-off": more_boots},
                                problems + more_problems, log_ab)


def main(argv: list[str] | None = None) -> int:
    """Run, print, save; exit 1 with a one-line reason on any failure (scratch kept for inspection)."""
    args = build_parser().parse_args(argv)
    workers, settings = load_settings(args)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    ok = False
    try:
        results = run(work, workers, settings)
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
