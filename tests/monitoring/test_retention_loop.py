"""The retention job on both backends: one leader among processes, the age purge on schedule,
the size cap trimmed from the oldest end without holding up writers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from service.monitoring.predlog import PredictionLog
from service.monitoring.retention_loop import RetentionLoop
from service.store import Store, retention
from tests.builders import race

FEATURES = [{"name": "x", "type": "float"}]
DAY = 86400.0


def fill(plog: PredictionLog, batches: int, rows: int, *, start: float = 1000.0, prefix: str = "r") -> None:
    for b in range(batches):
        ids = [f"{prefix}{b}-{i}" for i in range(rows)]
        assert plog.record("m", 1, f"{prefix}{b}", ids, {"x": np.arange(rows, dtype=float)}, np.zeros(rows), None, 1.0,
                           FEATURES, now=start + b)


def loop(store: Store, clock: float = 10 * DAY, **kwargs) -> RetentionLoop:
    settings = {"older_than_seconds": DAY, "every_seconds": 3600.0, "max_rows": 0, **kwargs}
    return RetentionLoop(store, clock=lambda: clock, **settings)


def _run_in_child(barrier, results, db_path) -> None:
    job = loop(Store(db_path))
    barrier.wait()
    results.put(job.run_once() is not None)
    barrier.wait()  # every child has tried while the leader still holds the lock


def test_of_several_processes_exactly_one_purges(tmp_path):
    db = tmp_path / "log.sqlite"
    fill(PredictionLog(Store(db)), 3, 5)
    outcomes = race(_run_in_child, (db,), processes=4)
    assert sorted(outcomes) == [False, False, False, True]
    assert Store(db).fetch("SELECT COUNT(*) FROM prediction_batches") == [(0,)]


def test_one_leader_at_a_time_and_the_schedule_is_shared(make_store):
    store = make_store()
    fill(PredictionLog(store), 2, 3)
    first, second = loop(store), loop(make_store(), clock=10 * DAY + 60)
    assert first.run_once() == {"age": {"predictions": 6, "feedback": 0, "prediction_batches": 2, "requests": 0,
                                        "shadow": 0}}
    assert second.run_once() is None  # the first one leads
    first.stop()
    fill(PredictionLog(store), 1, 3, start=10 * DAY - 2 * DAY)
    assert second.run_once() == {}  # leads now, but the purge ran a minute ago (in another process)
    later = loop(store, clock=10 * DAY + 3600)
    second.stop()
    assert later.run_once()["age"]["predictions"] == 3
    later.stop()


def test_the_cap_deletes_the_oldest_batches_down_to_the_low_water_mark(make_store):
    store = make_store()
    plog = PredictionLog(store)
    fill(plog, 30, 10)
    counted = []
    job = loop(store, every_seconds=0, max_rows=200, on_deleted=lambda reason, rows: counted.append((reason, rows)))
    done = job.run_once()
    job.stop()
    left = store.fetch("SELECT SUM(rows) FROM prediction_batches")[0][0]
    assert left == 180 and done["cap"]["predictions"] == 120 and counted == [("cap", 120)]
    assert store.fetch("SELECT MIN(ts) FROM prediction_batches") == [(1012.0,)]  # the newest stay
    assert store.fetch("SELECT COUNT(*) FROM prediction_batches") == [(18,)]


def test_under_the_cap_nothing_is_deleted_and_the_count_sums_the_records(make_store, monkeypatch):
    store = make_store()
    fill(PredictionLog(store), 3, 10)
    assert retention.count_log_rows(store) == 30

    def no_purge(*_args):
        raise AssertionError("purged while under the cap")

    monkeypatch.setattr(retention, "purge_log", no_purge)
    assert retention.trim_log(store, 30) == {"predictions": 0, "feedback": 0, "prediction_batches": 0}


def test_trimming_never_holds_up_a_concurrent_writer(make_store):
    store = make_store(timeout=5.0)
    fill(PredictionLog(store), 100, 200)  # 20,000 rows, trimmed to 900 in transactions of 2,000
    writer_log = PredictionLog(make_store(timeout=5.0))
    waits: list[float] = []
    trimmed = threading.Event()

    def write() -> None:
        n = 0
        while not trimmed.is_set() or n < 5:
            started = time.perf_counter()
            ids = [f"w{n}-{i}" for i in range(50)]
            assert writer_log.record("m", 1, f"w{n}", ids, {"x": np.ones(50)}, np.zeros(50), None, 1.0, FEATURES,
                                     now=time.time())
            waits.append(time.perf_counter() - started)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    job = loop(store, every_seconds=0, max_rows=1000)
    try:
        assert job.run_once()["cap"]["predictions"] > 19_000
    finally:
        trimmed.set()
        writer.join(30)
        job.stop()
    assert writer_log.write_failures == 0 and len(waits) >= 5
    assert max(waits) < 2.0  # a write waits for one short delete at most, never for the whole trim


def test_a_failing_round_is_counted_and_never_raises(tmp_path, caplog):
    (tmp_path / "dir").mkdir()
    store = Store(tmp_path / "dir" / "log.sqlite")
    job = loop(store, max_rows=10)
    store.close()
    (tmp_path / "dir" / "log.sqlite").unlink()
    (tmp_path / "dir" / "log.sqlite").mkdir()  # a folder where the database was: every query fails
    assert job.run_once() is None and job.failures == 1
    assert "retention round failed" in caplog.text
    job.stop()


@pytest.mark.parametrize("every, cap, enabled", [(3600, 0, True), (0, 10, True), (0, 0, False)])
def test_the_loop_is_enabled_by_either_setting(tmp_path, every, cap, enabled):
    assert loop(Store(tmp_path / "x.sqlite"), every_seconds=every, max_rows=cap).enabled is enabled


def _deleted_total(client, reason: str) -> float:
    line = f'sklearn_server_prediction_log_rows_deleted_total{{reason="{reason}"}} '
    found = [row for row in client.get("/metrics").get_data(as_text=True).splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_the_app_runs_one_loop_per_worker_and_counts_what_it_deletes(make_app):
    app = make_app(retention_seconds=3600, prediction_log_max_rows=20)
    job, client = app.extensions["retention"], app.test_client()
    assert job._loop.running and job.max_rows == 20 and job.older_than_seconds == 30 * DAY
    fill(app.extensions["prediction_log"], 5, 10, start=time.time())
    before = _deleted_total(client, "cap")
    assert job.run_once()["cap"]["predictions"] == 40  # down to 90% of the cap: whole batches, oldest first
    assert _deleted_total(client, "cap") == before + 40


def test_each_round_hands_on_the_maintenance_marks_a_backup_left(make_store):
    from service.backup import take

    store = make_store()
    take.mark_done(store, 5000.0)
    heard = []
    job = loop(store, on_marks=heard.append)
    job.run_once()
    job.stop()
    assert heard == [{"backup": 5000.0, "retention": 10 * DAY}]


def test_the_app_publishes_how_old_the_last_backup_is(make_app):
    from service.backup import take

    app = make_app(retention_seconds=3600)
    take.mark_done(app.extensions["store"], 1234.5)
    app.extensions["retention"].run_once()
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'sklearn_server_maintenance_last_run_timestamp_seconds{task="backup"} 1234.5' in text
