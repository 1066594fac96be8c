"""Losses of the record path counted once and never doubled.

Torn and zero-filled tails, unreadable records on retry, a close that runs out of time, marks of
deleted segments.
"""

from __future__ import annotations

import os
import sys

from service.monitoring.outbox import Outbox
from service.monitoring.predlog import PredictionLog
from service.monitoring.record_format import pack
from service.monitoring.spool import Spool
from service.store import Store
from tests.builders import wait_until
from tests.monitoring.test_outbox import Locked, request_row, stored_ids


def outbox_for(store, folder, dropped):
    spool = Spool(folder, max_bytes=2**20)
    return Outbox(store, PredictionLog(store), spool, background=False, on_drop=lambda reason, n: dropped.append((reason, n)))


def segment_of_a_dead_worker(folder):
    """A segment of three request records whose worker is gone (its file closed, unshipped)."""
    dying = Spool(folder, max_bytes=2**20)
    dying.append([pack(request_row(i), None) for i in range(3)])
    path = dying._active.path
    dying.close()
    return path


def in_function(thread, name):
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def test_an_unreadable_record_is_counted_once_however_often_its_chunk_is_retried(tmp_path):
    store = Store(tmp_path / "db.sqlite", timeout=0.1)
    dropped = []
    outbox = outbox_for(store, tmp_path / "spool", dropped)
    outbox.put([pack(request_row(1), None), b"not a record", pack(request_row(2), None)])
    with Locked(store.path):
        for _ in range(3):  # three failed shipments of the same chunk
            outbox._retry_at = 0.0
            outbox.pump()
    outbox._retry_at = 0.0
    outbox.pump()
    assert stored_ids(store) == ["req-1", "req-2"]
    assert outbox.dropped == {"unreadable": 1}, "one unreadable record, counted once"
    assert sum(n for _, n in dropped) == 1


def test_a_zero_filled_tail_left_by_a_machine_crash_is_not_counted_as_thousands_of_records(tmp_path):
    """A crash after the file grew but before its data reached the disk leaves zeros (ext4, XFS):
    eight zero bytes pass the frame check (length 0, crc32(b"") == 0)."""
    store = Store(tmp_path / "db.sqlite", timeout=0.1)
    folder = tmp_path / "spool"
    path = segment_of_a_dead_worker(folder)
    with open(path, "ab") as tail:
        tail.write(bytes(64 * 1024))  # what the machine crash left after the last synced record
    dropped = []
    heir = outbox_for(store, folder, dropped)
    heir.pump()
    assert stored_ids(store) == ["req-0", "req-1", "req-2"]
    assert dropped == [("torn", 1)], f"{sum(n for _, n in dropped)} records counted lost from 64 KiB of zeros"


def test_a_torn_tail_is_counted_as_lost(tmp_path):
    """A record cut short (machine crash before fsync) is lost; the loss must show in the drop counts."""
    store = Store(tmp_path / "db.sqlite", timeout=0.1)
    folder = tmp_path / "spool"
    path = segment_of_a_dead_worker(folder)
    os.truncate(path, os.path.getsize(path) - 5)  # the last record lost its last bytes
    dropped = []
    heir = outbox_for(store, folder, dropped)
    heir.pump()
    assert stored_ids(store) == ["req-0", "req-1"]
    assert heir.spool.torn == 1
    assert heir.dropped or heir.status()["status"] != "ok", "a lost record is neither counted nor reported"


def test_marks_of_segments_shipped_and_deleted_do_not_pile_up_past_retention(tmp_path):
    """``spool_marks`` gains a row per segment ever shipped (each worker start, each 8 MiB); nothing deletes them."""
    store = Store(tmp_path / "db.sqlite", timeout=0.1)
    folder = tmp_path / "spool"
    spool = Spool(folder, max_bytes=2**20, segment_bytes=200)  # a few records per segment
    outbox = Outbox(store, PredictionLog(store), spool, background=False)
    for i in range(50):
        outbox.put([pack(request_row(i), None) for _ in range(2)])
        outbox.pump()
    outbox.close(0.0)
    assert list(folder.glob("*.seg")) == []  # every segment shipped and gone
    store.purge(0.0, now=10**10)  # retention with everything expired
    assert store.fetch("SELECT count(*) FROM requests")[0][0] == 0
    marks = store.fetch("SELECT count(*) FROM spool_marks")[0][0]
    assert marks == 0, f"{marks} marks of segments that no longer exist outlive retention"


def test_close_past_its_deadline_leaves_the_spool_open_and_locked_to_a_shipper_still_committing(tmp_path):
    """Closing the spool's files under a shipper mid-transaction would let another worker adopt a segment
    whose commit may still land (and commit it again), and have the shipper close a descriptor number
    another file took meanwhile: the files stay this process's until it ends."""
    folder = tmp_path / "spool"
    store = Store(tmp_path / "db.sqlite", timeout=5.0)  # a slow store: the transaction waits for the lock
    spool = Spool(folder, max_bytes=2**20, segment_bytes=200)
    outbox = Outbox(store, PredictionLog(store), spool, background=True)
    store.fetch("SELECT 1")  # the store's own files opened before the race
    with Locked(store.path):
        outbox.put([pack(request_row(i), None) for i in range(3)])  # one segment, sealed at 200 bytes
        segment = spool.segments[0]
        shipper = outbox._shipper
        wait_until(lambda: in_function(shipper, "_commit"), message="the shipper waits in its transaction")
        assert outbox.close(0.0) is False  # the worker's exit: no time left
        assert os.fstat(segment.fd).st_ino == segment.path.stat().st_ino  # still open, still that file
        assert Spool(folder, max_bytes=2**20).adopt() == 0  # and locked: no other worker takes it
    shipper.join(10)
    assert not shipper.is_alive()  # it stopped after its transaction, as close asked
    assert stored_ids(store) == ["req-0", "req-1", "req-2"]
    assert not segment.path.exists()  # shipped whole: deleted, by the process that holds it


def test_a_segment_still_being_committed_by_an_exiting_worker_is_not_committed_again_by_the_next(tmp_path):
    """The exiting worker's shipper still commits a chunk after ``close`` gave up on it; the next worker
    looking for segments of workers gone meanwhile must not take that one and commit the chunk again."""
    folder = tmp_path / "spool"
    store = Store(tmp_path / "db.sqlite", timeout=5.0)
    exiting = Outbox(store, PredictionLog(store), Spool(folder, max_bytes=2**20), background=True)
    heir_store = Store(tmp_path / "db.sqlite", timeout=5.0)  # the next worker's own connections
    heir = Outbox(heir_store, PredictionLog(heir_store), Spool(folder, max_bytes=2**20), background=False)
    store.fetch("SELECT 1")
    heir_store.fetch("SELECT 1")
    with Locked(store.path):  # the store is slow for a moment
        exiting.put([pack(request_row(i), None) for i in range(3)])
        shipper = exiting._shipper
        wait_until(lambda: in_function(shipper, "_commit"), message="the shipper waits in its transaction")
        assert exiting.close(0.0) is False  # the worker's exit, out of time
        heir.pump()
        assert heir.spool.segments == []  # still held by the exiting worker
    shipper.join(10)
    assert stored_ids(store) == ["req-0", "req-1", "req-2"]
    heir.pump()
    assert stored_ids(store) == ["req-0", "req-1", "req-2"]
