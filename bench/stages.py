"""``python -m bench.stages``: where a predict request's time goes inside one worker, stage by stage.

The app is built as a Gunicorn worker builds it (``create_app`` from the environment, sessions
warmed, the writer started, metrics in multiprocess files) and driven through its WSGI callable
with the environ Gunicorn would hand it, one request at a time, so no HTTP parsing or socket is
measured: that part is the floor's (``bench/floor_app.py``). Each model and size first runs
unprofiled (microseconds per request, wall clock, median of rounds), then under cProfile, whose
cumulative times are grouped into the stages the request passes (``STAGES``). cProfile inflates
functions that make many small calls, so read the stages as shares of the profiled total and
the unprofiled figure as the truth. Prints one table per scenario; ``--tree`` is not needed to
compare two checkouts: run each checkout's own ``python -m bench.stages``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import median
from typing import Any

#: (stage, [(file suffix, function name)]): a stage's time is the cumulative time of its functions,
#: summed; no stage names a function another stage's functions call, so nothing counts twice.
STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("request id hooks", (("api/request_ids.py", "take_request_id"), ("api/request_ids.py", "set_header"),
                          ("api/request_ids.py", "forget_request_id"))),
    ("metrics hooks", (("api/metrics.py", "_start"), ("api/metrics.py", "_finish"), ("api/metrics.py", "_release"))),
    ("Host/CSRF/proxy checks", (("api/csrf.py", "check_request"),)),
    ("auth (keys, open mode)", (("api/auth.py", "_authorize"),)),
    ("limits, route lookups", (("api/limits.py", "charge_request"), ("api/limits.py", "model_features"),
                               ("api/limits.py", "json_budget"), ("api/limits.py", "charge_rows"))),
    ("read body + JSON decode", (("api/io.py", "read_json"),)),
    ("envelope decode (codec)", (("protocols/v1.py", "decode"),)),
    ("route (catalog)", (("serving/catalog.py", "route"),)),
    ("validation", (("serving/validation.py", "validate_rows"),)),
    ("predict (backend)", (("serving/runtime.py", "predict"),)),
    ("output check", (("serving/inference.py", "check_output"),)),
    ("prediction ids", (("serving/inference.py", "prediction_ids"),)),
    # ``watch`` is a generator: its time is its own frames' (enter, and the exit that hands the answer
    # over), never the ``with`` body it wraps
    ("recorder hand-off", (("monitoring/observe.py", "watch"),)),
    ("response encoding", (("protocols/v1.py", "encode"), ("api/io.py", "json_response"))),
    ("drain hook", (("api/handlers.py", "_drain_refused_body"),)),
)
ROUNDS = 5


def environ(path: str, body: bytes, port: int = 8000) -> dict[str, Any]:
    """The WSGI environ Gunicorn builds for a JSON POST from 127.0.0.1."""
    return {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "", "RAW_URI": path,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000", "HTTP_HOST": f"127.0.0.1:{port}",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }


def call(app: Callable, path: str, body: bytes) -> tuple[str, bytes]:
    """One request through the WSGI callable; returns (status, body), closing the response as Gunicorn does."""
    seen: list[str] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        seen.append(status)

    result = app(environ(path, body), start_response)
    try:
        out = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen[0], out


def per_request_us(app: Callable, path: str, body: bytes, requests: int) -> float:
    """Median over ``ROUNDS`` of the wall-clock microseconds per request (no profiler)."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(requests):
            call(app, path, body)
        rounds.append((time.perf_counter() - start) * 1e6 / requests)
    return median(rounds)


def stage_times(stats: pstats.Stats, requests: int) -> dict[str, float]:
    """Cumulative microseconds per request of each stage's functions, from a profile."""
    table = stats.stats  # type: ignore[attr-defined]
    found: dict[str, float] = {}
    for stage, functions in STAGES:
        total = 0.0
        for suffix, name in functions:
            for (filename, _line, function), (_cc, _nc, _tt, ct, _callers) in table.items():
                if function == name and filename.endswith(suffix):
                    total += ct
        found[stage] = total * 1e6 / requests
    return found


def wsgi_total(stats: pstats.Stats, requests: int) -> float:
    """The profiled microseconds per request of the whole Flask app (``Flask.wsgi_app``)."""
    for (filename, _line, function), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if function == "wsgi_app" and filename.endswith("flask/app.py"):
            return ct * 1e6 / requests
    return 0.0


def profile(app: Callable, path: str, body: bytes, requests: int) -> tuple[dict[str, float], float, pstats.Stats]:
    """Run ``requests`` under cProfile; return per-stage µs, the profiled total µs and the stats."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        call(app, path, body)
    profiler.disable()
    stats = pstats.Stats(profiler)
    return stage_times(stats, requests), wsgi_total(stats, requests), stats


def format_report(name: str, rows: int, unprofiled: float, stages: dict[str, float], total: float) -> str:
    """A plain-text table: each stage's profiled µs and share, the rest (Flask and Werkzeug) and the truth."""
    lines = [f"== {name}, {rows} row(s): {unprofiled:.0f} µs per request in the app, unprofiled "
             f"(profiled total {total:.0f} µs)"]
    accounted = 0.0
    for stage, us in stages.items():
        accounted += us
        lines.append(f"  {stage:<28} {us:8.1f} µs  {us / total:6.1%}" if total else f"  {stage:<28} {us:8.1f} µs")
    rest = total - accounted
    lines.append(f"  {'Flask/Werkzeug (the rest)':<28} {rest:8.1f} µs  {rest / total:6.1%}" if total else "")
    return "\n".join(lines)


def build_app(root: Path, scratch: Path) -> Any:
    """The project's app over ``root``, set up as ``post_worker_init`` leaves a Gunicorn worker."""
    os.environ.update(ARTIFACTS_DIR=str(root), REGISTRY_POLL_SECONDS="0", DATABASE_URL=f"sqlite:///{scratch / 'p.db'}",
                      PROMETHEUS_MULTIPROC_DIR=str(scratch / "prom"), OMP_NUM_THREADS="1", LOG_LEVEL="warning",
                      ORT_DISABLE_TELEMETRY="1")
    from service.monitoring import metrics

    metrics.prepare_multiprocess_dir(scratch / "prom")
    from threadpoolctl import threadpool_limits

    from service.app import create_app

    threadpool_limits(1)
    app = create_app()
    app.extensions["catalog"].warm_up()
    app.extensions["observer"].start()
    return app


def scenarios(root: Path, models: Iterable[str], sizes: Iterable[int]) -> list[tuple[str, int, str, bytes]]:
    from bench.models import BOOSTED, FOREST, train_all
    from bench.workload import build_scenarios

    extra = train_all(root) if not (root / FOREST).exists() else {FOREST: None, BOOSTED: None}
    if extra.get(FOREST) is None:
        from bench.models import synthetic_data

        X, _ = synthetic_data()
        extra = {FOREST: X, BOOSTED: X}
    wanted = set(models)
    return [(s.model, s.rows, s.path, s.body) for s in build_scenarios(root, extra, tuple(sizes)) if s.model in wanted]


def main(argv: list[str] | None = None) -> int:
    from bench.models import BOOSTED, FOREST
    from bench.workload import CLASSIFIER

    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, help="a folder the bench models are trained into once and reused")
    parser.add_argument("--models", nargs="+", default=[CLASSIFIER, BOOSTED, FOREST])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (default 2000)")
    parser.add_argument("--top", type=int, default=0, help="also print the N costliest functions by own time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as scratch:
        root = args.artifacts or Path(scratch) / "artifacts"
        work = Path(scratch) / "server"
        work.mkdir()
        todo = scenarios(root, args.models, args.rows)
        app = build_app(root, work)
        for name, rows, path, body in todo:
            status, answer = call(app, path, body)
            if not status.startswith("200"):
                raise SystemExit(f"{name}/{rows}: {status} {answer[:200]!r}")
            requests = max(20, args.requests // max(1, rows // 10))
            per_request_us(app, path, body, max(10, requests // 10))  # warm
            truth = per_request_us(app, path, body, requests)
            stages, total, stats = profile(app, path, body, requests)
            print(format_report(name, rows, truth, stages, total), flush=True)
            if args.top:
                out = io.StringIO()
                stats.stream = out  # type: ignore[attr-defined]
                stats.sort_stats("tottime").print_stats(args.top)
                print(out.getvalue())
        app.extensions["observer"].close(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
