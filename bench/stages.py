"""``python -m bench.stages``: where a predict request's CPU goes in a real worker, stage by stage.

One Gunicorn server per checkout (``--tree`` adds a second, say a baseline ``git worktree``), one
worker each, serves the bench models as the README starts it (monitoring on, ONNX Runtime by
default). For each model and batch size, the servers take wrk load in alternating rounds while
py-spy (a sampling profiler, not part of the project: pass its path with ``--py-spy``; ``pip
install --target /tmp/pyspy py-spy`` gives one) samples the worker's threads, and the worker's
CPU is read from /proc. Each sample goes to the innermost stage its stack passes through
(``STAGES``: the request's own steps, then Flask, then Gunicorn), so the shares add up to the
worker's CPU, and a share times the CPU per request gives microseconds per request. The writer
thread that records answers after they are sent is a stage of its own. Load stays on loopback,
bounded in time; servers are stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess  # nosec B404  # runs py-spy with a fixed argument list, never a shell
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench import load, procstat
from bench.server import REPO, Server, post

#: (stage, [(path fragment, function)]), in priority order: a sample belongs to the first stage with
#: a frame on its stack. "" as the function matches any in that file; a function is compared by its
#: last dotted part (py-spy says ``Recorder._run``). Gunicorn runs each request on a thread of its
#: pool, so the request's own stages come before the catch-all for other threads.
STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("recorder writer thread (after the answer)", (("monitoring/recorder.py", "_run"), ("monitoring/outbox.py", ""),
                                                    ("monitoring/spool.py", ""))),
    ("predict (backend)", (("serving/runtime.py", "predict"),)),
    ("validation", (("serving/validation.py", "validate_rows"),)),
    ("output check", (("serving/inference.py", "check_output"),)),
    ("prediction ids", (("serving/inference.py", "prediction_ids"),)),
    ("route (catalog)", (("serving/catalog.py", "route"),)),
    ("envelope decode (codec)", (("protocols/v1.py", "decode"), ("protocols/v2.py", "decode"),
                                 ("protocols/mlflow.py", "decode"))),
    ("read body + JSON parse", (("api/io.py", "read_json"),)),
    ("response encoding", (("protocols/v1.py", "encode"), ("api/io.py", "json_response"))),
    ("recorder hand-off (request thread)", (("monitoring/observe.py", ""),)),
    ("limits, model lookups", (("api/limits.py", ""),)),
    ("auth (keys, open mode)", (("api/auth.py", "_authorize"),)),
    ("Host/CSRF/proxy checks", (("api/csrf.py", ""), ("api/proxy.py", ""))),
    ("request id hooks", (("api/request_ids.py", ""),)),
    ("metrics hooks", (("api/metrics.py", ""), ("monitoring/metric_families.py", ""))),
    ("view and error hooks (rest)", (("api/predict.py", ""), ("api/handlers.py", ""))),
    ("Flask/Werkzeug (routing, contexts, Response)", (("flask/", ""), ("werkzeug/", ""))),
    ("JSON access log", (("service/access_log.py", "access"), ("gunicorn/glogging.py", "access"))),
    ("Gunicorn (HTTP parse and write, worker loop)", (("gunicorn/", ""), ("service/buffering.py", ""))),
    ("other threads and the rest", (("", ""),)),
)
#: A stack whose innermost frame is one of these waits: py-spy took it for running, but it is idle
#: (a background loop's own frame is innermost only while it sleeps or waits in C).
IDLE_LEAVES = frozenset({"select", "wait", "sleep", "_worker", "get", "join", "poll", "accept", "_run"})
MODELS = ("breast-cancer", "hist-gb", "random-forest")
SIZES = (1, 100)


def frames(stack: str) -> list[tuple[str, str]]:
    """(file, function) of each frame of one py-spy raw line's stack, outermost first."""
    out = []
    for frame in stack.split(";"):
        function, _, where = frame.partition(" (")
        out.append((where.rsplit(":", 1)[0], function.strip()))
    return out


def stage_of(stack: list[tuple[str, str]]) -> str | None:
    """The stage a sample belongs to (the first of ``STAGES`` with a frame on the stack); None when idle."""
    if not stack or stack[-1][1].rsplit(".", 1)[-1] in IDLE_LEAVES:
        return None
    names = [(file, name.rsplit(".", 1)[-1]) for file, name in stack]
    for stage, markers in STAGES:
        for fragment, function in markers:
            if any(fragment in file and (not function or name == function) for file, name in names):
                return stage
    return STAGES[-1][0]


def tally(raw: str) -> Counter[str]:
    """Samples per stage from py-spy's ``--format raw`` output (``frame;frame;... count`` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        stage = stage_of(frames(stack)) if stack and count.isdigit() else None
        if stage is not None:
            counts[stage] += int(count)
    return counts


def breakdown(counts: Counter[str], cpu_us_per_request: float) -> dict[str, float]:
    """Microseconds per request of each stage: its share of the samples times the CPU per request."""
    total = sum(counts.values())
    return {stage: (counts.get(stage, 0) / total * cpu_us_per_request if total else 0.0) for stage, _ in STAGES}


def profiled_run(spy: Path, server: Server, url: str, body_file: Path, script: Path, settings: load.LoadSettings,
                 out: Path) -> tuple[Counter[str], float, int]:
    """wrk on one server while py-spy samples its worker; (samples per stage, worker CPU seconds, requests)."""
    worker = procstat.children(server.pid)[0]
    command = [str(spy), "record", "--pid", str(worker), "--rate", "400", "--nonblocking", "--format", "raw",
               "--output", str(out), "--duration", str(settings.seconds + 2)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as spying:  # noqa: S603  # nosec B603  # py-spy, a path the caller gave
        with procstat.CpuSampler(server.pid) as sampler:
            result = load.run_wrk(url, body_file, script, settings)
        spying.wait(settings.seconds + 30)
    if result.failed:
        raise RuntimeError(f"{url}: non-2xx answers under load")
    return tally(out.read_text() if out.exists() else ""), sampler.total(), result.requests


def bodies(root: Path, models: Iterable[str], sizes: Iterable[int]) -> list[tuple[str, int, str, bytes]]:
    """Train the bench models into ``root`` and return (model, rows, path, body) per scenario."""
    from bench.models import train_all
    from bench.workload import build_scenarios

    extra = train_all(root)
    wanted = set(models)
    return [(s.model, s.rows, s.path, s.body) for s in build_scenarios(root, extra, tuple(sizes)) if s.model in wanted]


def format_table(model: str, rows: int, figures: dict[str, dict[str, float]], per_request: dict[str, float]) -> str:
    names = list(figures)
    head = f"== {model}, {rows} row(s): worker CPU µs per request " + ", ".join(
        f"{name} {per_request[name]:.0f}" for name in names)
    lines = [head, f"  {'stage':<46}" + "".join(f"{name:>12}" for name in names)]
    for stage, _ in STAGES:
        lines.append(f"  {stage:<46}" + "".join(f"{figures[name][stage]:12.1f}" for name in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--py-spy", type=Path, required=True, dest="spy", help="the py-spy executable")
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to profile side by side (repeatable); this one always runs")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seconds", type=int, default=6, help="per profiled run (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per scenario (default 2)")
    parser.add_argument("--keep", type=Path, help="a folder to keep py-spy's raw stacks in (default: thrown away)")
    args = parser.parse_args(argv)
    load.require_wrk()
    trees = {"this": REPO, **{f"tree{i}": path.resolve() for i, path in enumerate(args.tree, 1)}}
    settings = load.LoadSettings(seconds=args.seconds, connections=1, threads=1)
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as scratch, contextlib.ExitStack() as stack:
        work = Path(scratch)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        root = work / "artifacts"
        todo = bodies(root, args.models, args.rows)
        script = load.write_script(work)
        servers = {}
        for name, tree in trees.items():
            server = Server(root, work / name, 1, tree=tree)
            stack.callback(server.stop)
            server.start()
            servers[name] = server
        for model, rows, path, body in todo:
            body_file = work / "body.json"
            body_file.write_bytes(body)
            counts = {name: Counter() for name in servers}
            cpu, served = dict.fromkeys(servers, 0.0), dict.fromkeys(servers, 0)
            for name, server in servers.items():
                for _ in range(3):
                    status, answer = post(server.url + path, body)
                    if status != 200:
                        raise SystemExit(f"{name} {model}/{rows}: HTTP {status} {answer[:200]!r}")
            for i in range(args.rounds):
                for name, server in servers.items():
                    found, seconds, requests = profiled_run(args.spy, server, server.url + path, body_file, script,
                                                            settings, (args.keep or work) / f"{name}-{model}-{rows}-{i}.txt")
                    counts[name] += found
                    cpu[name] += seconds
                    served[name] += requests
            per_request = {name: cpu[name] * 1e6 / max(1, served[name]) for name in servers}
            figures = {name: breakdown(counts[name], per_request[name]) for name in servers}
            print(format_table(model, rows, figures, per_request), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
