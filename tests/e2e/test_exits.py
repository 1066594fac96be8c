"""Every worker exit is a clean one: recycled, reloaded (HUP), stopped (TERM) or interrupted (INT).

A worker that aborts in its native exit handlers leaves ``terminate called ...`` and ``was sent
SIGABRT!`` in the log and skips the rest of its exit; these tests read the server's whole log
for those lines and read the store back for every prediction the clients were answered.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import requests

from tests.builders import logged_ids, wait_until
from tests.sqlite import connected

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90]
CLIENTS = 3
RECYCLES = 20
#: A worker is replaced after 10 to 12 requests (the jitter is a fifth), so 20 recycles take ~250 requests.
MAX_REQUESTS = 10
ABORT_MARKS = ("SIGABRT", "terminate called", "std::system_error")


class Load:
    """A few client threads sending predictions until stopped; keeps the ids of every answered one."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.ids: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.post(self.base + "/v1/models/diabetes:predict",
                                            json={"instances": [ROW, ROW]}, timeout=20)
                    response.raise_for_status()
                    # A quick shutdown (INT) can end a worker between a 200's headers and its
                    # body: the client was never given those ids.
                    ids = response.json()["ids"]
                except (requests.RequestException, ValueError) as exc:
                    with self._lock:
                        self.failures.append(type(exc).__name__)
                    continue
                with self._lock:
                    self.ids.extend(ids)

    def predictions(self) -> int:
        """How many predictions have been answered so far (two per request)."""
        with self._lock:
            return len(self.ids)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def boots(log: Path) -> int:
    return log.read_text().count("Booting worker with pid")


def master_threads(server) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/task"))


def abort_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if any(mark in line for mark in ABORT_MARKS)]


def test_recycles_a_reload_and_a_stop_leave_no_abort_and_lose_no_record(artifact_root, server_factory):
    server = server_factory(artifact_root, WORKER_MAX_REQUESTS=str(MAX_REQUESTS))
    # A thread in the master at fork is copied into no worker; whatever owns it breaks at their exit.
    assert master_threads(server) == 1
    load = Load(server.base)
    try:
        wait_until(lambda: boots(server.log_path) >= 2 + RECYCLES, timeout=40, interval=0.1,
                   message=f"{RECYCLES} workers recycled by WORKER_MAX_REQUESTS")
        before_reload = boots(server.log_path)
        server.proc.send_signal(signal.SIGHUP)  # every worker is replaced, gracefully
        wait_until(lambda: boots(server.log_path) >= before_reload + 2, timeout=20, interval=0.1,
                   message="the HUP started two new workers")
        answered = load.predictions()
        wait_until(lambda: load.predictions() > answered + 40, timeout=20, message="answers after the reload")
        failed_while_serving = list(load.failures)
        server.proc.send_signal(signal.SIGTERM)  # under load: the last answers are still queued for the store
        assert server.proc.wait(timeout=40) == 0
    finally:
        load.stop()
    assert failed_while_serving == []
    assert abort_lines(server.log_path) == []
    recorded = _predictions(artifact_root, server.port)
    assert [pid for pid in load.ids if pid not in recorded] == []


def test_an_interrupt_under_load_leaves_no_abort_and_loses_no_record(artifact_root, server_factory):
    server = server_factory(artifact_root)
    load = Load(server.base)
    try:
        wait_until(lambda: load.predictions() >= 200, timeout=30, message="answers before the interrupt")
        server.proc.send_signal(signal.SIGINT)  # quick shutdown: workers get SIGQUIT, no graceful wait
        assert server.proc.wait(timeout=40) == 0
    finally:
        load.stop()
    assert abort_lines(server.log_path) == []
    recorded = _predictions(artifact_root, server.port)
    assert [pid for pid in load.ids if pid not in recorded] == []


def _predictions(artifacts: Path, port: int) -> set[str]:
    """The prediction ids in the server's SQLite store (where tests.conftest.server_env puts it)."""
    with connected(artifacts.parent / f"db-{port}" / "predictions.db") as db:
        return set(logged_ids(db))
