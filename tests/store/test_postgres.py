"""The store on a real PostgreSQL server: what only a server database can show.

The behaviours both backends share (round trip, feedback, windows, purge, alert states) run on
PostgreSQL through the ``make_store`` parameter of test_store.py, test_predlog.py and
test_alerts.py. Here: several processes at once (no row lost, one alert transition, one label
per id) and a server that stops and comes back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager

import numpy as np
import pytest

from service.monitoring.alerts import AlertManager, Evaluation, parse_rule
from service.monitoring.predlog import PredictionLog
from service.store import RequestRecord, Store
from tests import postgres
from tests.builders import logged_ids, race

pytestmark = pytest.mark.postgres  # several tests start a server of their own (running_postgres)

FEATURES = [{"name": "x", "type": "float"}]


def _writer(url: str, worker: int, batches: int, rows: int) -> None:
    plog = PredictionLog(Store.from_url(url, timeout=10))
    for b in range(batches):
        batch_ids = [f"w{worker}b{b}-{i}" for i in range(rows)]
        if not plog.record("m", 1, "r", batch_ids, {"x": np.arange(float(rows))}, np.zeros(rows), None, 1, FEATURES):
            raise SystemExit(1)


def test_concurrent_writers_in_two_processes_lose_no_row(postgres_url):
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(postgres_url, w, 100, 20)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)  # a hang guard: spawned children import numpy and pandas first, slow on busy cores
    assert [p.exitcode for p in procs] == [0, 0]
    store = Store.from_url(postgres_url)
    found = logged_ids(store)
    assert (len(found), len(set(found))) == (4000, 4000)
    store.close()


def _rule():
    return parse_rule({"name": "errors", "description": "too many errors", "metric": "traffic.error_rate", "op": ">",
                       "warn": 0.05, "alert": 0.2, "samples": "traffic.requests", "min_samples": 50})


class _FileRecorder:
    def __init__(self, path):
        self.path = path

    def send(self, notification):
        with open(self.path, "a") as f:
            f.write(notification.status + "\n")


def _apply_in_child(barrier, results, store, lines):
    manager = AlertManager(store, [_rule()], _FileRecorder(lines))  # the parent's Store: reconnects after the fork
    barrier.wait()
    transitions = manager.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 100.0)
    results.put([t.state for t in transitions])


def test_processes_applying_the_same_evaluations_fire_once(postgres_url, tmp_path):
    store, lines = Store.from_url(postgres_url), tmp_path / "notified.txt"
    AlertManager(store, [_rule()])  # schema first, and a connection that the children inherit
    outcomes = race(_apply_in_child, (store, lines))
    assert sorted(outcomes) == [[], [], [], ["firing"]]
    assert lines.read_text().splitlines() == ["firing"]
    (state,) = AlertManager(store, [_rule()]).states()  # the parent's connection survived its children
    assert (state["state"], state["value"], state["threshold"]) == ("firing", 0.5, 0.2)
    store.close()


def _label_in_child(url, barrier, results):
    plog = PredictionLog(Store.from_url(url, timeout=10))
    barrier.wait()
    results.put(plog.record_feedback("m", [{"id": f"p-{i}", "label": i % 2} for i in range(200)]))


def test_feedback_from_two_processes_labels_each_id_once(postgres_url):
    plog = PredictionLog(Store.from_url(postgres_url))
    plog.record("m", 1, "r", [f"p-{i}" for i in range(200)], {"x": np.ones(200)}, np.zeros(200), None, 1, FEATURES)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_label_in_child, args=(postgres_url, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    # a hang guard, not a time limit: each spawned child imports numpy, pandas and the service first,
    # which takes long on cores busy with other tests (parallel workers)
    outcomes = sorted((results.get(timeout=120) for _ in procs), key=lambda r: r["accepted"])
    for p in procs:
        p.join(10)
    assert [(r["accepted"], len(r["duplicate"]), r["unknown"]) for r in outcomes] == [(0, 200, []), (200, 0, [])]
    assert plog.store.fetch("SELECT count(*) FROM feedback") == [(200,)]
    plog.store.close()


def test_a_stopped_server_fails_writes_quickly_and_they_recover(caplog):
    with postgres.running_postgres() as server:  # its own server: the session's keeps running
        url = server.create_database()
        plog = PredictionLog(Store.from_url(url, timeout=1.0))
        store = plog.store

        def record(pid: str) -> bool:
            return plog.record("m", 1, "r", [f"{pid}-0"], {"x": np.ones(1)}, np.ones(1), None, 1, FEATURES)

        assert record("before") is True
        server.stop()
        with caplog.at_level(logging.WARNING, logger="service.store"):
            started = time.monotonic()
            assert record("during-0") is False  # the cached session is gone
            assert record("during-1") is False  # and no new one can be opened
            assert store.record_requests([]) is True  # nothing to write: no round trip
            assert time.monotonic() - started < 3.0  # bounded by connect_timeout, never a hang
            with pytest.raises(sqlite3.OperationalError):  # feedback must hear it: the API answers 503
                plog.record_feedback("m", [{"id": "before-0", "label": 1}])
            server.start()
            assert record("after") is True
        assert store.write_failures == 2
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].reason == "unreachable" and "OperationalError" in errors[0].error
        assert [r.failed_in_burst for r in caplog.records if r.levelno == logging.WARNING] == [2]
        assert set(logged_ids(store)) == {"before-0", "after-0"}
        store.close()


def test_a_server_down_at_construction_gets_the_schema_once_back(caplog):
    """A worker booting during an outage: building the store and the alert manager must not raise."""
    with postgres.running_postgres() as server:
        url = server.create_database()
        server.stop()
        with caplog.at_level(logging.WARNING, logger="service.store"):
            store = Store.from_url(url, timeout=1.0)
            manager = AlertManager(store, [_rule()])
            plog = PredictionLog(store)
            assert plog.record("m", 1, "r", ["down-0"], {"x": np.ones(1)}, np.ones(1), None, 1, FEATURES) is False
            with pytest.raises(sqlite3.OperationalError):  # reads raise, as ever
                manager.states()
            server.start()
            assert plog.record("m", 1, "r", ["up-0"], {"x": np.ones(1)}, np.ones(1), None, 1, FEATURES) is True
        names = {r[0] for r in store.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"requests", "shadow", "prediction_batches", "feedback", "alerts"} <= names
        assert manager.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 100.0)[0].state == "firing"
        assert [s["state"] for s in manager.states()] == ["firing"]
        assert store.write_failures == 1
        schema = [r for r in caplog.records if "schema" in r.getMessage()]
        assert [r.levelno for r in schema] == [logging.ERROR, logging.WARNING]  # logged once, then back
        store.close()


@contextmanager
def frozen(server: postgres.PostgresServer):
    """Stop every process of the cluster (the postmaster first, then its children: each backend leads
    its own process group) with SIGSTOP; SIGCONT them all at the end, whatever happened."""
    pids = [server.pid]
    os.kill(pids[0], signal.SIGSTOP)  # no new backend from here on
    try:
        children = subprocess.run(["pgrep", "-P", str(pids[0])], capture_output=True, text=True).stdout.split()
        for pid in map(int, children):
            os.kill(pid, signal.SIGSTOP)
            pids.append(pid)
        yield
    finally:
        # runuser (between us and a postmaster run as root) stops itself when its child stops: resume it too.
        for pid in [*pids, server.proc.pid]:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _request(ts: float) -> RequestRecord:
    return RequestRecord(request_id=f"r{ts}", ts=ts, model="m", version=1, role="production", status=200,
                         latency_ms=1.0, rows=1)


def test_a_frozen_server_fails_writes_within_a_bound_and_they_recover(caplog):
    """A server that accepts packets but never answers (its kernel still acknowledges them, so TCP
    keepalives see nothing): an open connection's write must give up, not hang the worker."""
    with postgres.running_postgres() as server:
        store = Store.from_url(server.create_database(), timeout=1.0)
        assert store.record_requests([_request(1)]) is True  # an open, cached connection
        with caplog.at_level(logging.WARNING, logger="service"), frozen(server):
            started = time.monotonic()
            assert store.record_requests([_request(2)]) is False  # on the open connection: the watchdog drops it
            assert store.record_requests([_request(3)]) is False  # a new one: connect_timeout
            assert time.monotonic() - started < 15
        assert store.record_requests([_request(4)]) is True
        assert [r[0] for r in store.fetch("SELECT ts FROM requests ORDER BY ts")] == [1.0, 4.0]
        assert store.write_failures == 2
        failed = next(r for r in caplog.records if r.getMessage().startswith("store write failed"))
        assert failed.reason == "unreachable" and "no answer from the database server" in failed.error
        store.close()
