"""Run the real server the way production does: Gunicorn with gunicorn.conf.py, on loopback.

The bench must measure the shipped configuration (worker class, access log, recycling), so it
starts the same command as ``make serve`` with only the environment changed, and always stops
it by PID, even when the bench fails half-way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess  # nosec B404  # starts the bench's own Gunicorn with a fixed argument list, never a shell
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # never anything else: the bench only talks to this machine
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 35.0  # gunicorn.conf.py gives requests in flight graceful_timeout = 30 s


class ServerError(RuntimeError):
    """The server did not come up (the message is the one-line reason)."""


def free_port() -> int:
    """Ask the kernel for a free loopback port (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


#: Settings a developer's shell may carry that would change what is measured or where it is
#: written; the bench drops them so every server runs the shipped defaults (alert and guard loops
#: included) with only what ``server_env`` sets on top.
DROPPED_ENV = ("API_KEYS_FILE", "MODEL_SIGNING_KEY", "GUNICORN_CMD_ARGS", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR",
               "PREDICTION_LOG_SAMPLE", "ALERT_SECONDS", "GUARD_SECONDS", "ALERT_RULES_FILE", "ALERT_WEBHOOK_URL",
               "MONITORING_WINDOW", "PII_HASH_KEY", "MAX_BATCH_ROWS", "VECTORIZED_MIN_ROWS", "RECORD_REQUESTS",
               "DATA_QUALITY_CHECKS", "RECORD_QUEUE_SIZE", "MODEL_BACKEND", "MODEL_BACKENDS", "MODEL_TRUSTED_KEYS",
               "METRICS_REQUIRE_KEY", "ALLOWED_HOSTS", "RATE_LIMIT_REQUESTS", "RATE_LIMIT_REQUESTS_BURST",
               "RATE_LIMIT_ROWS", "RATE_LIMIT_ROWS_BURST", "MONITORING_CACHE_SECONDS", "MONITORING_LARGE_REPORTS",
               "RETENTION_SECONDS", "RETENTION_DAYS", "PREDICTION_LOG_MAX_ROWS")
#: One native thread per process in every server (the project's, the naive app, the floor), so
#: none of them wins or loses by its BLAS/OpenMP pool; gunicorn.conf.py would only set defaults.
THREAD_LIMITS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PROJECT_APP = "wsgi:application"


def server_env(artifacts: Path, port: int, workers: int, scratch: Path,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Gunicorn: our registry, port, database and metrics folder; no API keys.

    Everything the server writes goes under ``scratch`` (a temp folder of this server's own):
    the SQLite store (requests, prediction log, alert state) and the Prometheus multiprocess
    files, never ``var/`` in the repo. ``extra`` adds settings for one run
    (``PREDICTION_LOG_SAMPLE=0``).
    """
    env = dict(os.environ)
    for name in DROPPED_ENV:
        env.pop(name, None)  # a developer's own settings must not turn requests into 401s or skew figures
    env.update(THREAD_LIMITS)
    env.update(HOST=HOST, PORT=str(port), WEB_CONCURRENCY=str(workers), ARTIFACTS_DIR=str(artifacts),
               REGISTRY_POLL_SECONDS="0", DATABASE_URL=f"sqlite:///{scratch.absolute() / 'predictions.db'}",
               PROMETHEUS_MULTIPROC_DIR=str(scratch.absolute() / "prom"))
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A Gunicorn master we started; ``url`` is where it listens once ``start`` returned."""

    artifacts: Path
    scratch: Path  # this server's own folder: its database, metrics files and log
    workers: int
    extra_env: dict[str, str] = field(default_factory=dict)
    app: str = PROJECT_APP  # the WSGI app Gunicorn serves with gunicorn.conf.py (bench.naive_app:application, ...)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    repo: Path = REPO  # the checkout served (another commit's, to compare)

    @property
    def log_path(self) -> Path:
        return self.scratch / "gunicorn.log"

    @property
    def pid(self) -> int:
        """The Gunicorn master's pid (its children are the workers)."""
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Spawn Gunicorn (logs to a file) and wait until ``/readyz`` says 200."""
        (self.scratch / "prom").mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", self.app]
        env = server_env(self.artifacts, self.port, self.workers, self.scratch, self.extra_env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=self.repo, stdout=log,  # nosec B603  # noqa: S603  the venv's gunicorn, fixed args
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"gunicorn exited with code {code} before it was ready (log: {self.log_path})")
            if self._ready():
                return
            time.sleep(0.2)
        raise ServerError(f"/readyz not 200 after {START_TIMEOUT:.0f} s (log: {self.log_path})")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:  # nosec B310  # noqa: S310  self.url is http://HOST
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM the master (graceful), wait, then SIGKILL it if it is still there."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def worker_boots(self) -> int:
        """How many workers Gunicorn booted (more than ``workers`` means recycling or crashes)."""
        try:
            return self.log_path.read_text(errors="replace").count("Booting worker with pid")
        except OSError:
            return 0


def post(url: str, body: bytes, timeout: float = 60.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One POST (JSON unless ``headers`` say otherwise) to the bench server; returns (status, body) for 4xx/5xx too."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"the bench only sends traffic to {HOST}, not {url}")
    headers = headers or {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310  http to loopback, checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310  # noqa: S310  http to loopback, checked above
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
