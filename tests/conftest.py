"""Shared fixtures: demo artifacts built once per session, the app in-process, and real Gunicorn servers.

In-process (flaskr's layout): ``app`` is ``create_app(config)`` over a copy of the demo models and
a SQLite file in ``tmp_path``, with no background thread; ``client`` is its test client and
``runner`` a click runner whose environment points the CLI at the same artifacts and database.
``make_app(**overrides)`` builds more apps (keys, limits) the same way. Real Gunicorn servers
(``server_factory``, ``demo_server``) are for what needs processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from service.config import Config
from service.models.demo import train_demo
from tests import postgres
from tests.postgres import make_store, postgres_server, postgres_url  # noqa: F401  (shared fixtures)

REPO = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
DEFAULT_WORKERS = 2  # server_env's WEB_CONCURRENCY
WORKERS_FORKED_SECONDS = 5.0  # how long start_server waits for the master to fork every worker
#: Every setting the server reads (from Config itself, so a new one is never forgotten), plus
#: Gunicorn's own and the one gunicorn.conf.py defaults for ONNX Runtime: a developer's environment
#: must not leak into the servers and apps tests start.
SCRUBBED_ENV = (*(name for name, _, _ in Config.describe()), "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS",
                "ORT_DISABLE_TELEMETRY")


#: Folders whose modules start servers and take the longest: parallel workers (make test) take them
#: first, so the run does not end with one worker on a long module while the others sit idle.
SLOW_FOLDERS = ("e2e", "deploy")


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marker must be on the item by then
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if postgres.needs_postgres(item):
            item.add_marker(pytest.mark.postgres)
    if getattr(config.option, "numprocesses", None):  # pytest-xdist: the order is the order modules are handed out
        items.sort(key=lambda item: item.path.parent.name not in SLOW_FOLDERS)  # stable: modules stay whole


def pytest_report_header() -> str:
    where = postgres.PG_BIN if postgres.installed() else f"not installed ({postgres.PG_BIN} has no initdb/postgres)"
    return f"postgresql server for tests marked postgres: {where}"


_left_out: list[str] = []
_left_out_by_workers: list[int] = []  # under pytest-xdist: each worker's count (each collects the whole suite)


def pytest_deselected(items: list[pytest.Item]) -> None:
    _left_out.extend(item.nodeid for item in items if item.get_closest_marker("postgres"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A parallel worker (pytest-xdist) hands its count to the controller, which writes the summary."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["postgres_left_out"] = len(_left_out)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent when the suite runs in one process
def pytest_testnodedown(node, error) -> None:
    _left_out_by_workers.append(getattr(node, "workeroutput", {}).get("postgres_left_out", 0))


def pytest_terminal_summary(terminalreporter) -> None:
    if left_out := max([len(_left_out), *_left_out_by_workers]):
        terminalreporter.write_line(f"{left_out} PostgreSQL tests left out (-m); make test runs them "
                                    "against a real server")


@pytest.fixture(autouse=True)
def no_writes_to_the_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commands a test runs without naming a database (the CLI's audit records) write here, not to var/."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'default-store.db'}")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both demo models, trained once; copy it (``artifact_root``) before changing anything."""
    root = tmp_path_factory.mktemp("demo") / "artifacts"
    train_demo(root)
    return root


@pytest.fixture
def artifact_root(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(demo_root, root)
    return root


def app_config(artifacts: Path, database: Path, **overrides: object) -> Config:
    """A config for an in-process app: no poll, guard, alert or retention thread; the database in a file of its own."""
    values: dict[str, object] = dict(artifacts_dir=artifacts, database_url=f"sqlite:///{database}",
                                     poll_seconds=0, guard_seconds=0, alert_seconds=0, retention_seconds=0,
                                     prediction_log_max_rows=0,
                                     local_admin_keys_file=database.parent / "local-admin-keys.json")  # not var/
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def make_app(artifact_root: Path, tmp_path: Path) -> Iterator:
    """Build apps over this test's copy of the demo models: ``make_app(api_keys_file=path)``.

    Each app has its own database file. Background threads are off unless asked for
    (``poll_seconds=0.1``, ``guard_seconds=0.1``); whatever runs is stopped at the end.
    """
    from service.app import create_app

    apps: list[Flask] = []

    def make(**overrides: object) -> Flask:
        database = tmp_path / f"db-{len(apps)}.sqlite"
        apps.append(create_app(app_config(overrides.pop("artifacts_dir", artifact_root), database, **overrides)))
        return apps[-1]

    yield make
    for app in apps:
        close_app(app)


def close_app(app: Flask) -> None:
    """Stop an in-process app's threads and close its store: the path a Gunicorn worker's exit takes."""
    from service.app import close_app as close

    close(app)


@pytest.fixture
def app(make_app) -> Flask:
    """The app over a copy of the demo models, open on loopback (no keys file)."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> CliRunner:
    """A click runner for ``service.cli.cli`` over the app's artifacts and database (``runner.invoke(cli, [...])``)."""
    config: Config = app.config["SERVICE_CONFIG"]
    return CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(config.artifacts_dir),
                          "DATABASE_URL": config.database_url})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(artifacts: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(ARTIFACTS_DIR=str(artifacts), PORT=str(port), HOST="127.0.0.1", WEB_CONCURRENCY=str(DEFAULT_WORKERS),
               REGISTRY_POLL_SECONDS="1", LOG_LEVEL="info",
               DATABASE_URL=f"sqlite:///{artifacts.parent / f'db-{port}' / 'predictions.db'}",
               PROMETHEUS_MULTIPROC_DIR=str(artifacts.parent / f"prometheus-{port}"))
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Server:
    """A real Gunicorn master started by a test; stopped by PID."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.session.post(self.base + path, timeout=30, **kwargs)

    def log_records(self) -> list[dict]:
        """Every JSON line the server wrote (Gunicorn's and the app's)."""
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def wait_ready(self, timeout: float = 30.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.session.get(self.base + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.session.close()


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM a process started in its own session; kill its whole group if it is not gone in 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class Webhook:
    """A loopback receiver for alert notifications: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_server(artifacts: Path, log_dir: Path, *, wait: str | None = "/readyz", **env: str) -> Server:
    """Start Gunicorn on a free loopback port with the repo's gunicorn.conf.py."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], cwd=REPO,
                                env=server_env(artifacts, port, **env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, port, log_path)
    if wait:
        try:
            server.wait_ready(path=wait)
        except Exception:
            server.stop()
            raise
        # The first worker can answer before the master has forked the others (it forks them up to
        # 0.1 s apart, and a worker of preloaded models is ready in milliseconds): tests that count
        # or kill workers start from all of them. Bounded, and not a failure: a test of workers
        # that cannot boot says so itself.
        wanted = int(env.get("WEB_CONCURRENCY", DEFAULT_WORKERS))
        deadline = time.monotonic() + WORKERS_FORKED_SECONDS
        while len(server.worker_pids()) < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
    return server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start servers for one test; every one is stopped at the end, whatever happened."""
    servers: list[Server] = []

    def start(artifacts: Path, **kwargs) -> Server:
        server = start_server(artifacts, tmp_path, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def demo_server(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server over the demo models, shared by a module's read-only tests."""
    server = start_server(demo_root, tmp_path_factory.mktemp("logs"), MAX_BATCH_ROWS="5000")
    yield server
    server.stop()


@contextmanager
def small_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "4m") at ``mountpoint`` for a test that fills a filesystem;
    unmounted at the end. Skips where mount(8) is missing or not permitted (it needs root)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine: cannot make a small filesystem to fill")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)

