"""Records wait in the spool while the store fails, and reach it once, in full, when it answers again."""

from __future__ import annotations

import logging
import sqlite3
import time

import numpy as np
import pytest

from service.monitoring.outbox import ADOPT_SECONDS, Outbox
from service.monitoring.predlog import EncodedBatch, PredictionLog
from service.monitoring.record_format import pack, unpack
from service.monitoring.spool import Spool
from service.store import REQUEST_COLUMNS, Store


def request_row(i, model="m"):
    values = {"request_id": f"req-{i}", "ts": 1.0 + i, "model": model, "version": 1, "role": "production",
              "status": 200, "latency_ms": 1.0, "rows": 1, "fallback_from": None, "error": None, "summary": None}
    return tuple(values[c] for c in REQUEST_COLUMNS)


def stored_ids(store):
    return sorted(r[0] for r in store.fetch("SELECT request_id FROM requests"))


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "db.sqlite", timeout=0.1)


def outbox_for(store, folder, **kwargs):
    spool = Spool(folder, max_bytes=kwargs.pop("max_bytes", 2**20))
    return Outbox(store, PredictionLog(store), spool, background=False, **kwargs)  # shipped when the test pumps


class Locked:
    """Another process's exclusive transaction on the SQLite file: every write waits, then fails."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)

    def __enter__(self):
        self.db.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc):
        self.db.execute("ROLLBACK")
        self.db.close()


def test_a_record_round_trips_with_binary_fields_as_they_are():
    assert unpack(pack(request_row(1), None)) == (request_row(1), None)
    batch = EncodedBatch(ts=1.0, model="m", version=1, request_id="r", latency_ms=1.0, rows=2, base="b",
                         positions=None, subjects=None, features='["x"]', inputs=b"\x00\x01raw", outputs=b"",
                         probabilities=None)
    assert unpack(pack(None, batch)) == (None, batch)
    assert unpack(pack(request_row(2), batch)) == (request_row(2), batch)
    for broken in (b"", b"\x05\x00\x00\x00[99]", pack(None, batch)[:-1], pack(None, batch) + b"x"):
        with pytest.raises(ValueError):
            unpack(broken)


def test_an_encoded_binary_batch_round_trips_and_reaches_the_store_as_it_was(store, tmp_path):

    features = [{"name": "x", "type": "float"}, {"name": "c", "type": "category"}]
    plog = PredictionLog(store)
    batch = plog.encode("m", 1, "r", ["b-0", "b-1"], {"x": np.array([0.5, np.nan]), "c": np.array(["a", None], dtype=object)},
                        np.array([1, 0]), np.array([[0.25, 0.75], [1.0, 0.0]]), 1.0, features, ts=1.0)
    assert isinstance(batch.arrays, bytes) and len(batch.arrays) == 8 * (2 + 2 + 4)
    assert unpack(pack(request_row(1), batch)) == (request_row(1), batch)
    outbox = outbox_for(store, tmp_path / "spool")
    outbox.put([pack(None, batch)])
    outbox.pump()
    window = plog.window("m", 1, features=features)
    assert window.ids == ["b-1", "b-0"] and window.predictions.tolist() == [0, 1]
    assert np.array_equal(window.columns["x"], [np.nan, 0.5], equal_nan=True) and window.columns["c"].tolist() == [None, "a"]
    assert window.probabilities.tolist() == [[1.0, 0.0], [0.25, 0.75]]


def test_a_locked_store_costs_no_records(store, tmp_path):
    dropped = []
    outbox = outbox_for(store, tmp_path / "spool", on_drop=lambda reason, n: dropped.append(reason))
    with Locked(store.path):
        outbox.put([pack(request_row(i), None) for i in range(50)])
        assert outbox.pump() > 0  # a retry is due later
        assert outbox.failures == {"locked": 1}
        assert outbox.status()["spooled_bytes"] > 0
    outbox._retry_at = 0.0
    assert outbox.pump() == ADOPT_SECONDS
    assert stored_ids(store) == sorted(f"req-{i}" for i in range(50))
    assert dropped == [] and outbox.status()["spooled_bytes"] == 0


def test_failed_writes_are_counted_by_reason_on_the_store(store, tmp_path):
    seen = []
    store.on_write_failure = lambda table, reason: seen.append((table, reason))
    outbox = outbox_for(store, tmp_path / "spool")
    with Locked(store.path):
        outbox.put([pack(request_row(1), None)])
        outbox.pump()
    assert seen == [("records", "locked")]


def test_retries_back_off(store, tmp_path):
    outbox = outbox_for(store, tmp_path / "spool")
    with Locked(store.path):
        outbox.put([pack(request_row(1), None)])
        first = outbox.pump()
        outbox._retry_at = 0.0
        second = outbox.pump()
    assert second > first


def test_a_segment_committed_before_its_writer_died_is_not_written_twice(store, tmp_path):
    folder = tmp_path / "spool"
    dying = outbox_for(store, folder)
    dying.put([pack(request_row(i), None) for i in range(10)])
    chunk = dying.spool.pending()
    dying._commit(chunk.records, chunk)  # committed, then the process dies before noting it
    dying.spool.close()
    heir = outbox_for(store, folder)
    heir.put([pack(request_row(i), None) for i in range(10, 12)])
    heir.pump()
    assert stored_ids(store) == sorted(f"req-{i}" for i in range(12))


def test_an_adopted_segment_with_nothing_committed_is_shipped_whole(store, tmp_path):
    folder = tmp_path / "spool"
    with Locked(store.path):
        dying = outbox_for(store, folder)
        dying.put([pack(request_row(i), None) for i in range(5)])
        dying.pump()
        dying.spool.close()  # a worker killed while the store was locked
    heir = outbox_for(store, folder)
    heir.pump()
    assert stored_ids(store) == sorted(f"req-{i}" for i in range(5))
    assert list(folder.glob("*.seg")) == []


def test_a_full_spool_falls_back_to_memory_then_drops_and_says_so(store, tmp_path, caplog):
    dropped = []
    outbox = outbox_for(store, tmp_path / "spool", max_bytes=200, memory_bytes=300,
                        on_drop=lambda reason, n: dropped.append((reason, n)))
    record = pack(request_row(1), None)
    with Locked(store.path), caplog.at_level(logging.WARNING, "service.monitoring.outbox"):
        outbox.put([record] * (200 // (len(record) + 8)))  # fills the spool
        outbox.put([record] * 3)  # into memory
        outbox.put([record] * 20)  # past memory too
        assert outbox.status()["status"] == "degraded"
    assert dropped and all(reason == "spool_full" for reason, _ in dropped)
    assert sum(n for _, n in dropped) == outbox.dropped["spool_full"] > 0
    assert "prediction records dropped" in caplog.text
    outbox._retry_at = 0.0
    outbox.pump()
    kept = 200 // (len(record) + 8) + 300 // len(record)
    assert len(store.fetch("SELECT request_id FROM requests")) == kept


def test_an_unwritable_spool_keeps_records_in_memory_for_the_store(store, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    outbox = outbox_for(store, blocker / "spool")
    outbox.put([pack(request_row(i), None) for i in range(3)])
    assert outbox.status()["status"] == "spooling"
    outbox.pump()
    assert stored_ids(store) == ["req-0", "req-1", "req-2"]


def test_an_unreadable_record_is_dropped_and_counted_and_the_rest_shipped(store, tmp_path):
    outbox = outbox_for(store, tmp_path / "spool")
    outbox.put([pack(request_row(1), None), b"not json", pack(request_row(2), None)])
    outbox.pump()
    assert stored_ids(store) == ["req-1", "req-2"]
    assert outbox.dropped == {"unreadable": 1}


def test_close_ships_what_it_can_and_leaves_the_rest_for_the_next_worker(store, tmp_path):
    folder = tmp_path / "spool"
    outbox = outbox_for(store, folder)
    with Locked(store.path):
        outbox.put([pack(request_row(1), None)])
        assert outbox.close(time.monotonic() + 0.3) is False
    assert len(list(folder.glob("*.seg"))) == 1
    heir = outbox_for(store, folder)
    heir.pump()
    assert stored_ids(store) == ["req-1"]
