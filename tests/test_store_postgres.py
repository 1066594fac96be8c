"""The store on a real PostgreSQL server: what only a server database can show.

The behaviours both backends share (round trip, feedback, windows, purge, alert states) run on
PostgreSQL through the ``make_store`` parameter of test_store.py, test_predlog.py and
test_alerts.py. Here: several processes at once (no row lost, one alert transition, one label
per id) and a server that stops and comes back.
"""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import time

import numpy as np
import pytest

from service.monitoring.alerts import AlertManager, Evaluation, parse_rule
from service.monitoring.predlog import PredictionLog
from service.store import Store
from tests import postgres

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
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = Store.from_url(postgres_url)
    assert store.fetch("SELECT count(*), count(DISTINCT id) FROM predictions") == [(4000, 4000)]
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


def _apply_in_child(store, barrier, results, lines):
    manager = AlertManager(store, [_rule()], _FileRecorder(lines))  # the parent's Store: reconnects after the fork
    barrier.wait()
    transitions = manager.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 100.0)
    results.put([t.state for t in transitions])


def test_processes_applying_the_same_evaluations_fire_once(postgres_url, tmp_path):
    store, lines = Store.from_url(postgres_url), tmp_path / "notified.txt"
    AlertManager(store, [_rule()])  # schema first, and a connection that the children inherit
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_apply_in_child, args=(store, barrier, results, lines)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
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
    outcomes = sorted((results.get(timeout=30) for _ in procs), key=lambda r: r["accepted"])
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
            return plog.record("m", 1, "r", [pid], {"x": np.ones(1)}, np.ones(1), None, 1, FEATURES)

        assert record("before") is True
        server.stop()
        with caplog.at_level(logging.WARNING, logger="service.store"):
            started = time.monotonic()
            assert record("during-0") is False  # the cached session is gone
            assert record("during-1") is False  # and no new one can be opened
            assert store.record_requests([]) is True  # nothing to write: no round trip
            assert time.monotonic() - started < 3.0  # bounded by connect_timeout, never a hang
            with pytest.raises(sqlite3.OperationalError):  # feedback must hear it: the API answers 503
                plog.record_feedback("m", [{"id": "before", "label": 1}])
            server.start()
            assert record("after") is True
        assert store.write_failures == 2
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "OperationalError" in errors[0].reason
        assert [r.failed_in_burst for r in caplog.records if r.levelno == logging.WARNING] == [2]
        assert {r[0] for r in store.fetch("SELECT id FROM predictions")} == {"before", "after"}
        store.close()
