"""A real PostgreSQL server for the tests: one per session, a fresh database per test.

``postgres_server`` runs ``initdb`` and ``postgres`` from Debian's ``postgresql`` package as the
``postgres`` OS user (initdb refuses root) in a temporary directory, on a free loopback port,
and stops it by PID at the end. ``postgres_url`` creates an empty database for one test. Import
both into a test module or ``conftest.py``. Missing binaries fail the run: never a skip.
Every test that uses a server carries the ``postgres`` marker (``needs_postgres``, applied in
``conftest.py``), so ``-m "not postgres"`` runs where no server is installed.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def _newest_server_bin() -> Path:
    """Debian installs each major version under /usr/lib/postgresql/<major>/bin; take the newest.

    ``POSTGRES_BIN`` overrides the search (point it at an empty directory to act as a machine
    without PostgreSQL: every test marked ``postgres`` then fails, and no other test may).
    """
    if override := os.environ.get("POSTGRES_BIN"):
        return Path(override)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _newest_server_bin()


def installed() -> bool:
    """Tell whether the server binaries the fixtures run are on this machine."""
    return all((PG_BIN / name).exists() for name in ("initdb", "postgres"))


def needs_postgres(item: pytest.Item) -> bool:
    """Tell whether a collected test uses a PostgreSQL server (through these fixtures or a backend parameter)."""
    if {"postgres_server", "postgres_url"} & set(getattr(item, "fixturenames", ())):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) == "postgres" for name in ("make_store", "backend"))
OS_USER = "postgres"
START_SECONDS = 30.0
_databases = itertools.count(1)


@dataclass
class PostgresServer:
    """A running server: its data directory, port and process; ``stop`` ends it by PID."""

    data: Path
    port: int
    proc: subprocess.Popen | None

    def start(self) -> None:
        """Start ``postgres`` on the cluster (again, after ``stop``) and wait until it takes connections."""
        log_path = self.data.parent / "postgres.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                _as_postgres(str(PG_BIN / "postgres"), "-D", str(self.data), "-k", str(self.data.parent / "sockets"),
                             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                             "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres not ready after {START_SECONDS}s:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"test_{os.getpid()}_{next(_databases)}"
        self.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    @property
    def pid(self) -> int | None:
        """The postmaster's PID (runuser, our child, stays in between and does not pass SIGINT on)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT: end the sessions, checkpoint, exit), then wait; kill after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *args] if os.geteuid() == 0 else list(args)


def start_postgres(root: Path) -> PostgresServer:
    """Initialise a cluster under ``root`` and start a server on it; wait until it takes connections."""
    missing = [name for name in ("initdb", "postgres") if not (PG_BIN / name).exists()]
    if missing:
        pytest.fail(f"PostgreSQL binaries missing ({', '.join(str(PG_BIN / m) for m in missing)}): "
                    "run make system-deps (apt-get install postgresql), or leave these tests out with "
                    "-m 'not postgres' (make test-fast)", pytrace=False)
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam(OS_USER)
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    init = subprocess.run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                       "--no-sync", "-E", "UTF8", "--locale", "C"),
                          capture_output=True, text=True, timeout=120)
    if init.returncode:
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    server = PostgresServer(data, _free_port(), None)
    server.start()
    return server


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Run a throw-away server (in a temporary directory the ``postgres`` user can reach) for a block."""
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    try:
        server = start_postgres(root)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, stopped by PID at the end."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty database of its own for one test."""
    return postgres_server.create_database()


BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """A factory of stores on one backend (each test runs on both): ``make_store(name="db", timeout=5.0)``.

    The same name opens the same database again (another ``Store`` on it); another name, another
    database. PostgreSQL starts (once) only for the tests that run on it. Stores close at the end.
    """
    from service.store import Store

    urls: dict[str, str] = {}
    stores: list[Store] = []

    def make(name: str = "db", timeout: float = 5.0) -> Store:
        if name not in urls:
            urls[name] = (f"sqlite:///{tmp_path / (name + '.sqlite')}" if request.param == "sqlite"
                          else request.getfixturevalue("postgres_server").create_database())
        stores.append(Store.from_url(urls[name], timeout=timeout))
        return stores[-1]

    make.backend = request.param
    yield make
    for store in stores:
        store.close()
