"""The side-by-side run: this server, two naive Flask apps and the bare stack, interleaved, under wrk.

All the servers of one comparison run at once, each a Gunicorn started with gunicorn.conf.py
(same worker count, sync workers, one native thread), and every scenario loads them in turn
(A, B, C, D, then the next scenario), so noise from other jobs on the machine hits them alike.
Each wrk run is paired with a ``CpuSampler`` on that server's process tree, so the report can
say what a request costs the server, not only how fast it came back. Servers are stopped by
pid when the comparison ends, whether it succeeded or not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench import load, procstat
from bench.server import HOST, PROJECT_APP, Server, post
from bench.workload import Scenario

WARMUP_SECONDS = 1  # one unmeasured wrk run per server first: lazy sessions, the writer thread, SQLite pages
MONITORING_OFF = {"PREDICTION_LOG_SAMPLE": "0", "RECORD_REQUESTS": "0", "DATA_QUALITY_CHECKS": "0"}


@dataclass(frozen=True)
class Variant:
    """One server in a comparison: which app Gunicorn serves and what environment differs."""

    name: str
    label: str
    app: str = PROJECT_APP
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_project(self) -> bool:
        return self.app == PROJECT_APP


SERVER, NAIVE, LEAN, FLOOR, SERVER_OFF = "server", "naive", "lean", "floor", "server-off"
VARIANTS = (
    Variant(SERVER, "this server, monitoring on (defaults)"),
    Variant(NAIVE, "naive Flask app (joblib + DataFrame + predict)", "bench.naive_app:application"),
    Variant(LEAN, "lean naive Flask app (np.array(instances) + predict + jsonify)", "bench.lean_app:application"),
    Variant(FLOOR, "floor: Gunicorn + Flask, constant answer", "bench.floor_app:application"),
    Variant(SERVER_OFF, "this server, monitoring off (" + ", ".join(f"{k}={v}" for k, v in MONITORING_OFF.items()) + ")",
            env=MONITORING_OFF),
)

#: Worker recycling settings compared on the project's server (GUNICORN_CMD_ARGS wins over the
#: config file); the first is whatever gunicorn.conf.py says today.
RECYCLING = (
    Variant("recycle-conf", "gunicorn.conf.py as shipped"),
    Variant("recycle-100k", "--max-requests 100000 --max-requests-jitter 20000",
            env={"GUNICORN_CMD_ARGS": "--max-requests 100000 --max-requests-jitter 20000"}),
    Variant("recycle-off", "--max-requests 0 (no recycling)", env={"GUNICORN_CMD_ARGS": "--max-requests 0"}),
    # On a slow or busy machine the shipped count is not reached within one run; ten times more
    # often shows what each replacement costs, as the shipped count does at ten times the rate.
    Variant("recycle-500", "--max-requests 500 --max-requests-jitter 250 (often)",
            env={"GUNICORN_CMD_ARGS": "--max-requests 500 --max-requests-jitter 250"}),
)


@dataclass(frozen=True)
class Run:
    """One wrk run against one server, with the CPU its process tree used meanwhile."""

    load: load.LoadResult
    cpu_seconds: float
    pids_seen: int

    def cpu_us_per_request(self) -> float | None:
        return self.cpu_seconds * 1e6 / self.load.requests if self.load.requests else None

    def as_dict(self, rows: int) -> dict[str, Any]:
        per_request = self.cpu_us_per_request()
        return asdict(self.load) | {
            "failed": self.load.failed, "cpu_seconds": self.cpu_seconds, "pids_seen": self.pids_seen,
            "rows_per_second": self.load.requests_per_second * rows, "cpu_us_per_request": per_request,
            "cpu_us_per_row": None if per_request is None else per_request / rows,
        }


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measured_run(server: Server, scenario: Scenario, body_file: Path, script: Path,
                 settings: load.LoadSettings) -> Run:
    """wrk on one server while a sampler reads that server's CPU from /proc."""
    with procstat.CpuSampler(server.pid) as sampler:
        result = load.run_wrk(server.url + scenario.path, body_file, script, settings)
    return Run(result, sampler.total(), sampler.pids_seen)


def smoke_check(server: Server, variant: Variant, scenario: Scenario, repeats: int) -> tuple[str | None, list]:
    """Send the body a few times (warming every worker); return (problem or None, predictions)."""
    for _ in range(repeats):
        status, body = post(server.url + scenario.path, scenario.body)
        if status != 200:
            return f"{scenario.key}: smoke request got HTTP {status}: {body[:200].decode(errors='replace')}", []
    predictions = orjson.loads(body).get("predictions", [])
    if variant.name != FLOOR and len(predictions) != scenario.rows:
        return f"{scenario.key}: smoke request got {len(predictions)} predictions for {scenario.rows} rows", []
    return None, predictions


def same_answers(ours: list, theirs: list) -> bool:
    """The project and the naive app must predict the same thing, or the comparison is meaningless."""
    a, b = np.asarray(ours), np.asarray(theirs)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=1e-5, atol=1e-8))
    return bool((a.astype(str) == b.astype(str)).all())


def start_all(stack: contextlib.ExitStack, variants: tuple[Variant, ...], root: Path, work: Path,
              workers: int) -> dict[str, Server]:
    """Start every variant's server; each is registered for stopping before it is started."""
    servers = {}
    for variant in variants:
        server = Server(root, work / variant.name, workers, dict(variant.env), app=variant.app)
        stack.callback(drop_database, server.scratch)  # runs after the stop below (last in, first out)
        stack.callback(server.stop)
        progress(f"starting {variant.name}: gunicorn {variant.app} ({variant.label}) on {server.url}")
        server.start()
        servers[variant.name] = server
    return servers


def drop_database(scratch: Path) -> None:
    """Delete a stopped server's SQLite files: gigabytes of prediction log after 10,000-row runs."""
    for leftover in scratch.glob("predictions.db*"):
        leftover.unlink(missing_ok=True)


def backends(server: Server, models: list[str]) -> dict[str, str]:
    """Which backend answers each model's version 1 on the project's server (onnx, joblib, or unknown)."""
    found = {}
    for model in models:
        url = f"{server.url}/v1/models/{model}/versions/1"
        if not url.startswith(f"http://{HOST}:"):  # a check that python -O cannot strip, unlike an assert
            raise ValueError(f"the bench only asks {HOST}, not {url}")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # nosec B310  # noqa: S310  http to loopback, checked above
                found[model] = orjson.loads(response.read()).get("backend") or "joblib (no backend field)"
        except OSError as exc:
            found[model] = f"unknown ({exc})"
    return found


def smoke_all(servers: dict[str, Server], variants: tuple[Variant, ...], scenarios: list[Scenario],
              workers: int) -> tuple[set[str], list[str]]:
    """Smoke-check every scenario on every server; return the keys that passed everywhere, and problems."""
    problems, passed = [], set()
    for scenario in scenarios:
        answers, bad = {}, False
        for variant in variants:
            problem, answers[variant.name] = smoke_check(servers[variant.name], variant, scenario, 2 * workers)
            if problem:
                problems.append(f"{variant.name}: {problem}")
                bad = True
        for other in (NAIVE, LEAN):
            if not bad and SERVER in answers and other in answers and not same_answers(answers[SERVER], answers[other]):
                problems.append(f"{scenario.key}: this server and the {other} app predict different things")
                bad = True
        if not bad:
            passed.add(scenario.key)
    return passed, problems


def compare(root: Path, work: Path, workers: int, scenarios: list[Scenario],
            settings: load.LoadSettings) -> dict[str, Any]:
    """Every scenario on every variant, interleaved; plus backends and worker memory."""
    work.mkdir(parents=True, exist_ok=True)
    script = load.write_script(work)
    runs: dict[str, dict[str, Any]] = {s.key: {} for s in scenarios}
    with contextlib.ExitStack() as stack:
        servers = start_all(stack, VARIANTS, root, work, workers)
        passed, problems = smoke_all(servers, VARIANTS, scenarios, workers)
        warm = dataclasses.replace(settings, seconds=WARMUP_SECONDS)
        for i, scenario in enumerate(s for s in scenarios if s.key in passed):
            body_file = work / f"{scenario.key.replace('/', '_')}.json"
            body_file.write_bytes(scenario.body)
            if i == 0:
                for variant in VARIANTS:
                    load.run_wrk(servers[variant.name].url + scenario.path, body_file, script, warm)
            progress(f"wrk {scenario.key}: {', '.join(v.name for v in VARIANTS)}, {settings.seconds} s each")
            for variant in VARIANTS:
                try:
                    run = measured_run(servers[variant.name], scenario, body_file, script, settings)
                except RuntimeError as exc:  # e.g. that server died: the others' figures still count
                    problems.append(f"{variant.name}: {scenario.key}: {exc}")
                    progress(f"!! {variant.name}: {scenario.key}: {exc}")
                    continue
                runs[scenario.key][variant.name] = run.as_dict(scenario.rows)
        memory = {name: [asdict(m) for m in procstat.worker_memory(server.pid)] for name, server in servers.items()}
        served_by = backends(servers[SERVER], sorted({s.model for s in scenarios}))
        boots = {name: server.worker_boots() for name, server in servers.items()}
    return {"variants": {v.name: v.label for v in VARIANTS}, "runs": runs, "memory_mib": memory,
            "backends": served_by, "worker_boots": boots, "problems": problems}


def recycling(root: Path, work: Path, workers: int, scenario: Scenario, settings: load.LoadSettings) -> dict[str, Any]:
    """p50/p99 of one fast scenario with recycling as shipped, far rarer, off and very often (interleaved)."""
    work.mkdir(parents=True, exist_ok=True)
    script = load.write_script(work)
    body_file = work / "recycling.json"
    body_file.write_bytes(scenario.body)
    results: dict[str, Any] = {}
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        servers = start_all(stack, RECYCLING, root, work / "recycling", workers)
        for variant in RECYCLING:
            problem, _ = smoke_check(servers[variant.name], variant, scenario, 2 * workers)
            if problem:
                problems.append(f"{variant.name}: {problem}")
        progress(f"wrk {scenario.key} at {settings.connections} connections for recycling: "
                 f"{', '.join(v.name for v in RECYCLING)}, {settings.seconds} s each")
        for variant in RECYCLING:
            if any(p.startswith(variant.name + ":") for p in problems):
                continue
            try:
                run = measured_run(servers[variant.name], scenario, body_file, script, settings)
            except RuntimeError as exc:
                problems.append(f"{variant.name}: {exc}")
                continue
            results[variant.name] = run.as_dict(scenario.rows) | {"label": variant.label}
        for variant in RECYCLING:
            if variant.name in results:
                results[variant.name]["worker_boots"] = servers[variant.name].worker_boots()
    return {"scenario": scenario.key, "connections": settings.connections, "seconds": settings.seconds,
            "runs": results, "problems": problems}
