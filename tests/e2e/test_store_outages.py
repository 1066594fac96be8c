"""A store that is locked, read-only, full or down for a while, under load, costs no answered record.

Real Gunicorn (2 workers), real SQLite and PostgreSQL. Clients send 1-row predictions before,
during and after the outage; once the store is back, every answered request is in the requests
table and every answered prediction id is known to feedback. A worker killed during the outage
leaves its spool to the next one, which ships it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests import postgres
from tests.builders import wait_until
from tests.conftest import small_tmpfs
from tests.sqlite import connected

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90]
CLIENTS = 4
OUTAGE_SECONDS = 10.0
FEEDBACK_CHUNK = 500


class Load:
    """Client threads predicting until stopped; what was answered, by request id and prediction ids."""

    def __init__(self, base: str):
        self.base, self.answered, self.failed = base, [], 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._pool = ThreadPoolExecutor(CLIENTS)
        self._futures = [self._pool.submit(self._client) for _ in range(CLIENTS)]

    def _client(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                reply = session.post(self.base + "/v1/models/diabetes:predict", json={"instances": [ROW]}, timeout=10)
            except requests.RequestException:
                with self._lock:
                    self.failed += 1  # a connection cut by a killed worker: never answered
                continue
            if reply.status_code == 200:
                with self._lock:
                    self.answered.append((reply.headers["X-Request-ID"], reply.json()["ids"]))
            else:
                with self._lock:
                    self.failed += 1
            time.sleep(0.002)

    def stop(self) -> list[tuple[str, list[str]]]:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=30)
        self._pool.shutdown()
        return list(self.answered)


def stored_request_ids(database: Path) -> set[str]:
    with connected(database, timeout=10) as db:
        return {row[0] for row in db.execute("SELECT request_id FROM requests WHERE status = 200")}


def unknown_to_feedback(server, answered) -> list[str]:
    """Post a label for every answered prediction id; return those feedback does not know."""
    ids = [pid for _, pids in answered for pid in pids]
    unknown = []
    for start in range(0, len(ids), FEEDBACK_CHUNK):
        chunk = ids[start:start + FEEDBACK_CHUNK]
        body = {"feedback": [{"id": i, "label": 100.0} for i in chunk]}
        for _ in range(5):  # a worker's first use of a database that restarted may answer 503: try again, as told
            reply = server.post("/v1/models/diabetes/feedback", json=body)
            if reply.status_code != 503:
                break
            time.sleep(0.5)
        assert reply.status_code == 200, reply.text
        unknown += reply.json()["unknown"]
    return unknown


def metric(server, name: str, **labels: str) -> float:
    """Sum of a counter's samples with these labels on /metrics (0 when absent)."""
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def recording_states(server, seen: set[str], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            seen.add(server.get("/readyz").json().get("recording", {}).get("status"))
        except (requests.RequestException, ValueError):
            pass
        stop.wait(0.5)


def run_outage(server, database: Path, outage: Callable[[], object], *, during: Callable[[], None] | None = None):
    """Load, then ``outage`` (a context manager) for OUTAGE_SECONDS under load, then load again; return the answered."""
    load = Load(server.base)
    seen: set[str] = set()
    stop_probe = threading.Event()
    probe = threading.Thread(target=recording_states, args=(server, seen, stop_probe), daemon=True)
    probe.start()
    try:
        time.sleep(1.5)
        with outage():
            time.sleep(OUTAGE_SECONDS / 2)
            if during is not None:
                during()
            time.sleep(OUTAGE_SECONDS / 2)
        time.sleep(1.5)
    finally:
        answered = load.stop()
        stop_probe.set()
        probe.join(5)
    assert len(answered) > 200, "the load should have been answered throughout"
    return answered, seen


def assert_nothing_lost(server, database: Path, answered) -> None:
    wanted = {rid for rid, _ in answered}
    assert wait_until(lambda: wanted <= stored_request_ids(database), timeout=60), \
        f"{len(wanted - stored_request_ids(database))} of {len(wanted)} answered requests never reached the store"
    assert unknown_to_feedback(server, answered) == []
    assert metric(server, "sklearn_server_records_dropped_total") == 0


def database_of(server, root: Path) -> Path:
    return root.parent / f"db-{server.port}" / "predictions.db"


@contextmanager
def locked(database: Path):
    """Another process's exclusive transaction: every write waits for the lock, then fails."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30); "
         "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(600)", str(database)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()


@contextmanager
def immutable(database: Path):
    """The database and its write-ahead log made immutable (chattr +i: even root cannot write them).

    Not the -shm file: SQLite maps it into memory, and a mapping that cannot grow ends in SIGBUS,
    a crash of the test's making rather than a read-only database.
    """
    files = [p for p in (database, database.with_name(database.name + "-wal")) if p.exists()]
    subprocess.run(["chattr", "+i", *map(str, files)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], check=True)


def test_a_locked_store_loses_nothing_and_says_so(artifact_root, server_factory):
    server = server_factory(artifact_root)
    database = database_of(server, artifact_root)
    answered, seen = run_outage(server, database, lambda: locked(database))
    assert_nothing_lost(server, database, answered)
    assert metric(server, "sklearn_server_store_write_failures_total", reason="locked") > 0
    assert "spooling" in seen, seen


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr (e2fsprogs) is not installed")
def test_a_read_only_store_loses_nothing(artifact_root, server_factory):
    server = server_factory(artifact_root)
    database = database_of(server, artifact_root)
    wait_until(database.exists, timeout=10)
    answered, _ = run_outage(server, database, lambda: immutable(database))
    assert_nothing_lost(server, database, answered)
    failures = {reason: metric(server, "sklearn_server_store_write_failures_total", reason=reason)
                for reason in ("read_only", "unreachable", "other")}
    assert sum(failures.values()) > 0 and failures["other"] == 0, failures


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs for the database, unmounted at the end."""
    with small_tmpfs(tmp_path / "small", "16m") as mountpoint:
        yield mountpoint


def test_a_full_disk_under_the_store_loses_nothing(artifact_root, server_factory, small_disk, tmp_path):
    database = small_disk / "predictions.db"
    server = server_factory(artifact_root, DATABASE_URL=f"sqlite:///{database}", SPOOL_DIR=str(tmp_path / "spool"))
    filler = small_disk / "filler"

    @contextmanager
    def full():
        with open(filler, "wb", buffering=0) as file:  # unbuffered: closing it has nothing left to write
            for size in (65536, 4096, 1):  # fill the filesystem to the last byte
                try:
                    while file.write(b"\0" * size):
                        pass
                except OSError:
                    pass
        try:
            yield
        finally:
            filler.unlink()

    answered, seen = run_outage(server, database, full)
    assert_nothing_lost(server, database, answered)
    assert metric(server, "sklearn_server_store_write_failures_total", reason="full") > 0


def test_a_worker_killed_during_an_outage_leaves_its_records_to_the_next(artifact_root, server_factory):
    server = server_factory(artifact_root)
    database = database_of(server, artifact_root)
    victims = []

    def kill_a_worker():
        children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
        victims.append(int(children[0]))
        os.kill(victims[-1], signal.SIGKILL)  # its spool holds what it answered since the lock

    answered, _ = run_outage(server, database, lambda: locked(database), during=kill_a_worker)
    assert victims
    wanted = {rid for rid, _ in answered}

    def settled() -> bool:  # everything arrived, or nothing more arrives (what is gone is gone)
        seen = stored_request_ids(database)
        settled.history.append(len(seen & wanted))
        return wanted <= seen or settled.history[-20:] == [settled.history[-1]] * 20

    settled.history = []
    wait_until(settled, timeout=90, interval=0.25)
    missing = wanted - stored_request_ids(database)
    # Each answer's record reached the spool before the answer left: a killed worker loses
    # only requests it never answered, and those are not in ``answered``.
    assert not missing, f"{len(missing)} answered requests lost with the killed worker"
    assert not [line for line in server.log_records() if "SIGABRT" in line.get("message", "")]


@pytest.mark.postgres
def test_a_postgres_server_down_for_a_while_costs_no_records(artifact_root, server_factory):
    with postgres.running_postgres() as database:  # its own server, stopped and started by this test
        url = database.create_database()
        server = server_factory(artifact_root, DATABASE_URL=url)

        @contextmanager
        def down():
            database.stop()
            try:
                yield
            finally:
                database.start()

        load_answered, _ = run_outage(server, Path("unused"), down)
        wanted = {rid for rid, _ in load_answered}

        def stored() -> set[str]:
            from service.store import Store

            store = Store.from_url(url)
            try:
                return {row[0] for row in store.fetch("SELECT request_id FROM requests WHERE status = 200")}
            finally:
                store.close()

        assert wait_until(lambda: wanted <= stored(), timeout=60), f"{len(wanted - stored())} requests never stored"
        assert unknown_to_feedback(server, load_answered) == []
        assert metric(server, "sklearn_server_store_write_failures_total", reason="unreachable") > 0
        assert metric(server, "sklearn_server_records_dropped_total") == 0
