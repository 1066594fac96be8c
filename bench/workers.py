"""``python -m bench.workers``: each worker class against slow clients, then under load.

The table of ``docs/explanation/production.md`` (which worker for which deployment) comes from
here. ``gunicorn.conf.py`` picks the worker from the settings: a declared proxy
(``FORWARDED_ALLOW_IPS``) gets ``sync``, or ``gthread`` with ``THREADS`` > 1; none gets the
buffering worker. Each setting runs as its own server (2 workers, the shipped configuration,
the demo models), all started at once and measured in turn, ``--rounds`` times over:

* **slow clients**: 64 connections trickle their headers and 64 their body, one byte a second
  (a slowloris), while ``/healthz`` is probed and a 1-row prediction sent every 0.2 s for 5 s;
  a probe that takes over ``PROBE_TIMEOUT`` seconds counts as timed out;
* **load**: ``wrk -t2 -c8`` of 1-row ``diabetes`` predictions for ``--seconds``, with the
  server's CPU over its whole process tree from ``/proc``; then the workers' RSS. Every server
  has the same keys file and every prediction sends a key (with a proxy declared, loopback
  clients are proxied ones and need one).

Gevent is not measured: it is not a dependency (the page says why it was not adopted). Traffic
goes to loopback only, bounded in time; servers are stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import load, procstat
from bench.server import HOST, Server

MODEL = "diabetes"
PREDICT = f"/v1/models/{MODEL}:predict"
ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]  # one patient, as the demo model was trained
TRICKLING = 64  # of each kind: 2 workers x 4 threads is all it takes to stall gthread, 2 to stall sync
PROBE_SECONDS = 5.0
PROBE_EVERY = 0.2
PROBE_TIMEOUT = 2.0
WORKERS = 2
#: Every setting checks a key on each prediction: a declared proxy makes loopback clients proxied ones.
KEY = "sk_bench-workers-key"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    env: dict[str, str]


SETTINGS = (
    Setting("sync", "sync (a proxy declared)", {"FORWARDED_ALLOW_IPS": HOST}),
    Setting("gthread", "gthread, THREADS=4 (a proxy declared)", {"FORWARDED_ALLOW_IPS": HOST, "THREADS": "4"}),
    Setting("buffering", "buffering, THREADS=1 (the default)", {}),
    Setting("buffering-4", "buffering, THREADS=4", {"THREADS": "4"}),
)


@dataclass
class Figures:
    """One setting's measurements over the rounds."""

    probes: list[float | None] = field(default_factory=list)  # seconds per /healthz probe; None: timed out
    predictions: list[bool] = field(default_factory=list)  # answered 200 meanwhile
    rates: list[float] = field(default_factory=list)  # req/s under wrk
    cpu_us: list[float] = field(default_factory=list)  # server CPU per request under wrk
    p99_ms: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)  # mean worker RSS after the load

    def row(self) -> dict[str, object]:
        answered = [p for p in self.probes if p is not None]
        return {
            "probes": len(self.probes),
            "probes_timed_out": len(self.probes) - len(answered),
            "probe_ms_median": round(statistics.median(answered) * 1e3, 1) if answered else None,
            "probe_ms_max": round(max(answered) * 1e3, 1) if answered else None,
            "predictions_meanwhile": len(self.predictions),
            "predictions_answered": sum(self.predictions),
            "requests_per_second": round(statistics.median(self.rates)) if self.rates else None,
            "cpu_us_per_request": round(statistics.median(self.cpu_us)) if self.cpu_us else None,
            "p99_ms": round(statistics.median(self.p99_ms), 1) if self.p99_ms else None,
            "worker_rss_mib": round(statistics.median(self.rss_mib)) if self.rss_mib else None,
        }


@contextlib.contextmanager
def trickling(port: int, count: int, body: bool) -> Iterator[None]:
    """Hold ``count`` connections sending one byte a second: of the headers, or of a declared body."""
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    if body:
        head += "Content-Length: 100000\r\n\r\n{"
    sockets = []
    stop = threading.Event()
    try:
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=5)
            sockets.append(sock)
            with contextlib.suppress(OSError):  # a server that stopped reading: its buffers fill, that is the point
                sock.sendall(head.encode())

        def trickle() -> None:
            while not stop.wait(1.0):
                for sock in sockets:
                    with contextlib.suppress(OSError):
                        sock.send(b" " if body else b"X", socket.MSG_DONTWAIT)

        thread = threading.Thread(target=trickle, name="trickle", daemon=True)
        thread.start()
        yield
        stop.set()
        thread.join(timeout=5)
    finally:
        stop.set()
        for sock in sockets:
            sock.close()


def timed(method: str, url: str, data: bytes | None = None) -> tuple[int | None, float | None]:
    """(status, seconds) of one request; (None, None) when it took over ``PROBE_TIMEOUT``."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"the bench only sends traffic to {HOST}, not {url}")
    request = urllib.request.Request(url, data=data, method=method, headers=HEADERS)  # noqa: S310  http to loopback, checked above
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:  # nosec B310  # noqa: S310  http to loopback, checked above
            response.read()
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started
    except (urllib.error.URLError, OSError):  # timed out (or refused): the server did not answer in time
        return None, None


def slow_clients(server: Server, figures: Figures) -> None:
    body = orjson.dumps({"instances": [ROW]})
    with trickling(server.port, TRICKLING, body=False), trickling(server.port, TRICKLING, body=True):
        time.sleep(1.0)  # every slow connection accepted and sending
        deadline = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < deadline:
            status, seconds = timed("GET", server.url + "/healthz")
            figures.probes.append(seconds if status == 200 else None)
            status, _ = timed("POST", server.url + PREDICT, body)
            figures.predictions.append(status == 200)
            time.sleep(PROBE_EVERY)


def under_load(server: Server, figures: Figures, body_file: Path, script: Path, seconds: int) -> None:
    settings = load.LoadSettings(seconds=seconds, connections=8, threads=2)
    with procstat.CpuSampler(server.pid) as sampler:
        result = load.run_wrk(server.url + PREDICT, body_file, script, settings, headers=HEADERS)
    if result.failed:
        raise RuntimeError(f"wrk against {server.url}: {result.non2xx} non-2xx (first {result.first_bad_status}), "
                           f"socket errors {result.socket_errors}")
    figures.rates.append(result.requests_per_second)
    figures.cpu_us.append(sampler.total() * 1e6 / result.requests)
    figures.p99_ms.append(result.p99_ms)
    memories = procstat.worker_memory(server.pid)
    figures.rss_mib.append(sum(m.rss_mib for m in memories) / len(memories))


def run(rounds: int, seconds: int) -> dict[str, dict[str, object]]:
    from service.models.demo import train_demo
    from service.security.keys import hash_key

    load.require_wrk()
    found = {setting.name: Figures() for setting in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch, contextlib.ExitStack() as stack:
        folder = Path(scratch)
        train_demo(folder / "artifacts")
        body_file = folder / "body.json"
        body_file.write_bytes(orjson.dumps({"instances": [ROW]}))
        script = load.write_script(folder)
        keys = folder / "keys.json"
        keys.write_text(json.dumps({"keys": [{"id": "bench", "sha256": hash_key(KEY), "scopes": ["predict"]}]}))
        servers = {}
        for setting in SETTINGS:
            env = {"API_KEYS_FILE": str(keys), **setting.env}
            server = Server(folder / "artifacts", folder / setting.name, WORKERS, env)
            stack.callback(server.stop)
            server.start()
            servers[setting.name] = server
        for index in range(rounds):
            for setting in SETTINGS:
                print(f"bench: round {index + 1} of {rounds}: {setting.label}", file=sys.stderr, flush=True)
                slow_clients(servers[setting.name], found[setting.name])
                time.sleep(1.0)  # the slow connections' ends reach the workers
                under_load(servers[setting.name], found[setting.name], body_file, script, seconds)
    return {name: figures.row() for name, figures in found.items()}


def lines(rows: dict[str, dict[str, object]]) -> list[str]:
    """The table ``docs/explanation/production.md`` shows."""
    out = ["| worker | `/healthz` under 64 trickling | predictions meanwhile | req/s | CPU per request | p99 | worker RSS |",
           "|---|---|---|---|---|---|---|"]
    for setting in SETTINGS:
        row = rows[setting.name]
        if row["probes_timed_out"]:
            health = f"{row['probes_timed_out']} of {row['probes']} timed out"
        else:
            health = f"{row['probe_ms_median']} ms (max {row['probe_ms_max']})"
        answered = f"{row['predictions_answered']} of {row['predictions_meanwhile']}"
        cpu = row["cpu_us_per_request"]
        out.append(f"| {setting.label} | {health} | {answered} | {row['requests_per_second']:,} | "
                   f"{cpu / 1000:.2f} ms | {row['p99_ms']} ms | {row['worker_rss_mib']} MB |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2; medians are printed)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of wrk per setting and round (default 8)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds are positive whole numbers")
    rows = run(args.rounds, args.seconds)
    print(json.dumps(rows))
    print("\n".join(lines(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
