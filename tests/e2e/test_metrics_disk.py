"""End to end: metrics that survive the disk. A full filesystem under the database and the
metrics folder costs figures, never workers; a second server on a busy port leaves the
running one's metrics alone."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.monitoring import multiproc
from tests.conftest import GUNICORN, REPO, server_env, small_tmpfs

pytestmark = pytest.mark.e2e

ROW = {"instances": [[50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]]}
PREDICT = "/v1/models/diabetes:predict"
SIZE = "4m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, unmounted at the end (after the servers, which are set up later)."""
    with small_tmpfs(tmp_path / "small", SIZE) as mountpoint:
        yield mountpoint


def fill(folder: Path) -> int:
    """Write zeros into ``folder`` until its filesystem has no byte left; return how many were written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    written += fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    assert os.statvfs(folder).f_bavail == 0
    return written


def answers(server, path: str = "/healthz", **kwargs) -> int:
    """One request on a connection of its own, so requests spread over the workers (a kept-alive
    connection stays with the worker that accepted it)."""
    method = server.post if path.endswith(":predict") else server.get
    return method(path, headers={"Connection": "close"}, **kwargs).status_code


def test_a_full_filesystem_costs_metrics_never_workers(small_fs: Path, demo_root: Path, server_factory):
    metrics_dir = small_fs / "prometheus"
    server = server_factory(demo_root, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                            DATABASE_URL=f"sqlite:///{small_fs / 'db' / 'predictions.db'}")
    for _ in range(4):
        assert answers(server, PREDICT, json=ROW) == 200
    fill(small_fs)

    # A new worker must create its metric files on the full filesystem.
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (len(pids := server.worker_pids()) == 2 and victim not in pids):
        assert time.monotonic() < deadline, "Gunicorn did not replace the killed worker"
        time.sleep(0.1)
    server.wait_ready()

    # Both workers keep answering, also with series they have never written (their files must grow).
    for i in range(60):
        assert answers(server) == 200
        assert answers(server, PREDICT, json=ROW) == 200
        assert answers(server, f"/v1/models/diabetes/versions/{i % 3 + 7}:predict", json=ROW) == 404
        assert answers(server, PREDICT, json={"instances": [[1] * 3]}) == 422
    scrape = server.get("/metrics")
    assert scrape.status_code == 200 and "sklearn_server_http_requests_total" in scrape.text

    def answered_by() -> set[int]:
        return {r["http"]["pid"] for r in server.log_records()
                if isinstance(r.get("http"), dict) and r["http"].get("path") == PREDICT}

    # Which worker accepts a connection is the kernel's choice: ask until the replacement has answered.
    deadline = time.monotonic() + 30
    while not set(pids) <= answered_by():
        assert time.monotonic() < deadline, "the replacement worker never answered"
        assert answers(server, PREDICT, json=ROW) == 200
    assert sorted(server.worker_pids()) == sorted(pids), "a worker died on the full filesystem"
    log = server.log_path.read_text()
    assert "SIGBUS" not in log and "signal 7" not in log


def start_second(artifacts: Path, port: int, log_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """Start another Gunicorn on ``port`` (already taken) and wait for it to give up."""
    with open(log_dir / f"second-{port}.log", "wb") as log:
        return subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], cwd=REPO,
                              env=server_env(artifacts, port, **env), stdout=log, stderr=subprocess.STDOUT,
                              timeout=120)


def predictions_counted(server, expected: float, timeout: float = 10.0) -> float:
    """Return the predictions /metrics counts once it reaches ``expected`` (they are counted after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.get("/metrics").text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("sklearn_server_predictions_total{"))
        if counted >= expected or time.monotonic() > deadline:
            return counted
        time.sleep(0.05)


@pytest.mark.parametrize("folder", ["default", "explicit"])
def test_a_second_server_on_a_busy_port_leaves_the_first_ones_metrics(demo_root, tmp_path, server_factory, folder):
    # "" selects the default folder (in /dev/shm when usable), the one `make serve` uses
    env = {"PROMETHEUS_MULTIPROC_DIR": "" if folder == "default" else str(tmp_path / "prometheus")}
    first = server_factory(demo_root, **env)
    shared = (multiproc.default_dir(first.port) if folder == "default" else tmp_path / "prometheus")
    try:
        for _ in range(5):
            assert answers(first, PREDICT, json=ROW) == 200
        before = predictions_counted(first, 5)
        assert before == 5
        files = sorted(p.name for p in shared.glob("*.db"))
        assert files

        second = start_second(demo_root, first.port, tmp_path, **env)
        assert second.returncode != 0  # it could not bind

        # nothing of the first server's was removed (its other worker may have made files since)
        assert set(files) <= {p.name for p in shared.glob("*.db")}
        assert predictions_counted(first, before) == before
        assert answers(first, PREDICT, json=ROW) == 200
        assert predictions_counted(first, before + 1) == before + 1
    finally:
        first.stop()
        if folder == "default":
            shutil.rmtree(shared, ignore_errors=True)


def test_the_default_folder_is_in_memory_per_instance(demo_root, server_factory):
    server = server_factory(demo_root, PROMETHEUS_MULTIPROC_DIR="")
    folder = multiproc.default_dir(server.port)
    try:
        if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
            assert folder.parent == Path("/dev/shm") and str(server.port) in folder.name
            assert (folder.stat().st_mode & 0o777) == 0o700
        assert any(folder.glob("counter_*.db"))
        assert requests.get(server.base + "/metrics", timeout=10).status_code == 200
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
