"""``python -m bench.log_cost``: what the prediction log costs the server, log on against log off.

Two Gunicorn servers of one checkout run side by side on 127.0.0.1, the same in everything but
``PREDICTION_LOG_SAMPLE`` (1, the default, against 0: the rest of monitoring stays on in both).
For each size (1 and 10,000 rows of the demo classifier by default) they take the same requests
in rounds, one request at a time and by turns (one to each, then the next), and the CPU of each
server's process tree (workers and their background writer threads, from /proc) is read over the
same span, with a pause at the end of each round so the writers have finished what the requests
queued. On this kind of machine a thread's CPU time for the same work swings by 2x from one second
to the next (the host's other tenants): servers measured one after the other drew different
moments and their difference was noise; taking turns gives both the same moments.

Monitoring on also means the alert loop's evaluation: every ``ALERT_SECONDS`` (30 s by default)
one worker builds each model's report over its window of the log. With the log off that window
is empty and costs next to nothing; with it on the report reads and tests the window. A timer
landing inside the measured rounds or not made that part swing from nothing to ~150 us per
request, so it is measured on its own and charged at the rate production pays it:

* CPU is the scheduler's run time of every thread of each server (nanoseconds, not 10 ms ticks),
  over 12 rounds; the median and quartiles of the rounds' overheads are printed beside the
  total's: how far one run can be trusted;
* the servers run with ``ALERT_SECONDS=0`` (no timer) and ``MONITORING_CACHE_SECONDS=0``, so the
  rounds measure the request path, the record included (``*_requests`` figures);
* after the rounds, the CPU of ``REPORTS_PER_ROUND`` monitoring reports per round is read from
  each server (``GET .../monitoring?window=N``, N one more each time than ``MONITORING_WINDOW``
  so every record is decoded and tested again, as an evaluation does when a period brought a
  whole window of new records: an upper bound, HTTP and JSON included). Not between rounds: a
  report every second leaves the next requests to grow the heap it gave back, a cost production
  pays once per 30 s and the rounds would have paid thirty times over (+5 points at 10,000 rows);
* one evaluation is charged per ``ALERT_SECONDS`` of the default (30 s) at the rate this one
  client got from that server, i.e. over ``rate * 30`` requests. The headline per-request
  figures and ``overhead_percent`` include that share; ``break_even_requests_per_second`` says
  below what steady rate the amortized overhead would pass 10% (a server that quiet spends a
  few ms of CPU every 30 s on monitoring, whatever the percentage says).

Prints one JSON object per size. ``--tree PATH`` serves another checkout (say the commit before
a change, ``git worktree add PATH <commit>``) with this bench. Load is bounded (``--requests``)
and goes to loopback only; servers are stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import procstat
from bench.server import HOST, REPO, Server, post

MODEL = "breast-cancer"
SIZES = (1, 10_000)
#: Requests per size and server: about the same work (rows) per size, bounded either way.
REQUESTS = {1: 3000, 10_000: 192}  # per server: rounds of ~0.5 s, a checkpoint or a GC pass lands in its round's share
ROUNDS = 12  # short alternating rounds: a burst of load elsewhere on the machine hits both servers alike
SETTLE_SECONDS = 0.5  # after each round: the writer thread finishes what the round queued
WINDOW = 500  # MONITORING_WINDOW of both servers (the default)
ALERT_SECONDS = 30.0  # the evaluation period charged (Config's default)
REPORTS_PER_ROUND = 5  # reports timed after each round: CPU ticks are 10 ms, a report tens of ms
TARGET = 0.10
COMMON = {"ALERT_SECONDS": "0", "MONITORING_CACHE_SECONDS": "0", "MONITORING_WINDOW": str(WINDOW)}
VARIANTS = {"log_on": dict(COMMON), "log_off": COMMON | {"PREDICTION_LOG_SAMPLE": "0"}}


def body(rows: int) -> bytes:
    """``rows`` instances of the demo classifier's data set, in schema order."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    return orjson.dumps({"instances": [data[i % len(data)].tolist() for i in range(rows)]})


def overhead(on_us: float, off_us: float) -> float:
    """The log's share of the server's CPU per request, in percent of the log-off figure."""
    return (on_us - off_us) / off_us * 100.0


class TaskCpuSampler(procstat.CpuSampler):
    """``procstat.CpuSampler`` read from the scheduler's run time of every thread of the tree
    (``/proc/<pid>/task/<tid>/schedstat``, nanoseconds) instead of 10 ms ticks: a round of a few
    hundred ms is then measured to the microsecond. A thread that ends between two polls loses
    what it ran since the last one (the servers' threads live as long as their worker)."""

    def _poll(self) -> None:
        for pid in [self.master, *procstat.children(self.master)]:
            for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                try:
                    self._last[(pid, task.parent.name)] = int(task.read_text().split()[0]) / 1e9
                except (OSError, ValueError, IndexError):
                    continue  # the thread ended between the listing and the read


@dataclass
class Measured:
    """One server's figures over the rounds of one size."""

    cpu: float = 0.0  # CPU seconds of the rounds (requests and the writer's work)
    wall: float = 0.0  # seconds the client spent on the rounds' requests
    requests: int = 0
    report_cpu: float = 0.0  # CPU seconds of the reports timed after the rounds
    reports: int = 0
    rounds: list[float] = field(default_factory=list)  # CPU seconds of each round

    @property
    def request_us(self) -> float:
        return self.cpu * 1e6 / self.requests

    @property
    def report_us(self) -> float:
        return self.report_cpu * 1e6 / self.reports

    @property
    def rate(self) -> float:
        """Requests per second this one client got."""
        return self.requests / self.wall

    def per_request_us(self, period: float = ALERT_SECONDS) -> float:
        """Request cost plus one evaluation's share over the requests of one period at ``rate``."""
        return self.request_us + self.report_us / (self.rate * period)


def break_even(on: Measured, off: Measured, target: float = TARGET, period: float = ALERT_SECONDS) -> float | None:
    """The steady request rate below which the amortized overhead passes ``target``; None: never
    (the evaluation costs no more with the log on), inf: at any rate (the requests alone pass it)."""
    margin = (1 + target) * off.request_us - on.request_us
    extra = on.report_us - (1 + target) * off.report_us  # evaluation CPU beyond what the target allows
    if extra <= 0:
        return None if margin >= 0 else math.inf
    return math.inf if margin <= 0 else extra / (margin * period)


def get(url: str, timeout: float = 120.0) -> tuple[int, bytes]:
    """One GET to the bench server; returns (status, body) for 4xx/5xx too."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"the bench only sends traffic to {HOST}, not {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310  # noqa: S310  http to loopback, checked above
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def reports(server: Server, round_index: int) -> tuple[float, int]:
    """CPU seconds of ``REPORTS_PER_ROUND`` monitoring reports, each over a window not asked before."""
    with TaskCpuSampler(server.pid) as sampler:
        for k in range(REPORTS_PER_ROUND):
            window = WINDOW + 1 + round_index * REPORTS_PER_ROUND + k
            status, answer = get(f"{server.url}/v1/models/{MODEL}/monitoring?window={window}")
            if status != 200:
                raise RuntimeError(f"monitoring report: HTTP {status}: {answer[:200]!r}")
    return sampler.total(), REPORTS_PER_ROUND


def measure(servers: dict[str, Server], rows: int, requests: int) -> dict[str, Measured]:
    """Each server's CPU per request over alternating rounds of the same requests, and per report after each."""
    payload = body(rows)
    path = f"/v1/models/{MODEL}:predict"
    for server in servers.values():  # warm: the report's imports, then lazy sessions, the writers, SQLite pages
        get(f"{server.url}/v1/models/{MODEL}/monitoring?window={WINDOW}")
        for _ in range(3):  # after the report: the heap it gave back is grown again before the rounds
            post(server.url + path, payload)
        time.sleep(SETTLE_SECONDS)
    found = {name: Measured() for name in servers}
    per_round = max(1, requests // ROUNDS)
    for _ in range(ROUNDS):
        # The servers take turns request by request, so each round's moments of the machine (a
        # busy neighbour, a slower core) fall on both alike; their CPU is read over the same span.
        samplers = {name: TaskCpuSampler(server.pid) for name, server in servers.items()}
        for sampler in samplers.values():
            sampler.__enter__()
        try:
            for _ in range(per_round):
                for name, server in servers.items():
                    started = time.perf_counter()
                    status, answer = post(server.url + path, payload)
                    found[name].wall += time.perf_counter() - started
                    if status != 200:
                        raise RuntimeError(f"{name}: HTTP {status}: {answer[:200]!r}")
            time.sleep(SETTLE_SECONDS)
        finally:
            for sampler in samplers.values():
                sampler.__exit__(None, None, None)
        for name in servers:
            found[name].cpu += samplers[name].total()
            found[name].rounds.append(samplers[name].total())
            found[name].requests += per_round
    for index in range(ROUNDS):
        for name, server in servers.items():
            cpu, count = reports(server, index)
            found[name].report_cpu += cpu
            found[name].reports += count
    return found


def summary(rows: int, requests: int, tree: Path, on: Measured, off: Measured) -> dict:
    """The JSON line of one size: amortized figures first (what ``make bench`` prints), then their parts."""
    even = break_even(on, off)
    per_round = [overhead(a, b) for a, b in zip(on.rounds, off.rounds, strict=True)]
    return {"rows": rows, "requests": requests, "tree": str(tree),
            "cpu_us_per_request_log_on": round(on.per_request_us()),
            "cpu_us_per_request_log_off": round(off.per_request_us()),
            "overhead_percent": round(overhead(on.per_request_us(), off.per_request_us()), 1),
            "cpu_us_per_request_log_on_requests": round(on.request_us),
            "cpu_us_per_request_log_off_requests": round(off.request_us),
            "overhead_percent_requests": round(overhead(on.request_us, off.request_us), 1),
            # the same from each pair of rounds, the middle one: what a burst of load in one round cannot move
            "overhead_percent_requests_median_round": round(statistics.median(per_round), 1),
            # the rounds' middle half: how far one run can be trusted (two identical servers on a
            # loaded 2-core machine spread over tens of points; on an idle one, a few)
            "overhead_percent_rounds_quartiles": [round(q, 1) for q in statistics.quantiles(per_round, n=4)[::2]],
            "report_cpu_ms_log_on": round(on.report_us / 1000, 1),
            "report_cpu_ms_log_off": round(off.report_us / 1000, 1),
            "requests_per_second_log_on": round(on.rate, 1),
            "requests_per_second_log_off": round(off.rate, 1),
            "alert_seconds_charged": ALERT_SECONDS,
            "break_even_requests_per_second": None if even is None else
            ("never below target" if math.isinf(even) else round(even, 2))}


def run(tree: Path, sizes: tuple[int, ...], scale: float) -> list[dict]:
    from service.models.demo import train_demo

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-log-cost-") as scratch:
        root = Path(scratch) / "artifacts"
        train_demo(root)
        for rows in sizes:
            # Fresh servers per size: what one size's requests and reports leave in a worker (its
            # heap, the log's records) moved the next size's figures by several points.
            with contextlib.ExitStack() as stack:
                servers = {}
                for name, env in VARIANTS.items():
                    server = Server(root, Path(scratch) / f"{name}-{rows}", 1, dict(env), tree=tree)
                    stack.callback(server.stop)
                    server.start()
                    servers[name] = server
                requests = max(ROUNDS, round(REQUESTS.get(rows, 24) * scale))
                print(f"{rows} rows: {requests} requests per server...", file=sys.stderr, flush=True)
                found = measure(servers, rows, requests)
            results.append(summary(rows, requests, tree, found["log_on"], found["log_off"]))
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
