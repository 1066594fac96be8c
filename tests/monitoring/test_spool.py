"""The spool keeps answered records on disk, in order, until the store has them; a crash tears at most a tail."""

from __future__ import annotations

import os

import pytest

from service.monitoring import spool as spool_module
from service.monitoring.spool import HEADER, Spool, SpoolFull


def records(n, size=20):
    return [f"record-{i:05d}".encode().ljust(size, b".") for i in range(n)]


def ship_all(spool):
    shipped = []
    while (chunk := spool.pending(max_bytes=256)) is not None:
        shipped.extend(chunk.records)
        spool.shipped(chunk)
    return shipped


def test_records_come_back_in_order_and_shipped_segments_leave_the_disk(tmp_path):
    spool = Spool(tmp_path, max_bytes=2**20, segment_bytes=100)
    for batch in (records(5), records(7)[5:], records(12)[7:]):
        spool.append(batch)
    assert len(list(tmp_path.glob("*.seg"))) >= 2, "100-byte segments roll over"
    assert ship_all(spool) == records(12)
    assert spool.bytes == 0
    expected = [spool._active.name] if spool._active else []  # only an unsealed segment may stay
    assert [p.name for p in tmp_path.glob("*.seg")] == expected
    spool.close()
    assert list(tmp_path.glob("*.seg")) == []


def test_a_spool_never_grows_past_its_budget(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    spool.append(records(2))  # 2 x (8 + 20) bytes
    with pytest.raises(SpoolFull):
        spool.append(records(2))
    assert spool.bytes == 56
    ship_all(spool)
    spool.append(records(2))  # shipped bytes no longer count
    spool.close()


def test_segments_of_a_process_gone_are_adopted_by_the_next(tmp_path):
    left = Spool(tmp_path, max_bytes=2**20)
    left.append(records(3))
    left.close()  # exits with everything unshipped: the file stays, its lock goes
    heir = Spool(tmp_path, max_bytes=2**20)
    assert heir.adopt() == 1
    assert ship_all(heir) == records(3)
    assert list(tmp_path.glob("*.seg")) == []


def test_a_segment_whose_writer_lives_is_not_adopted(tmp_path):
    alive = Spool(tmp_path, max_bytes=2**20)
    alive.append(records(3))
    other = Spool(tmp_path, max_bytes=2**20)
    assert other.adopt() == 0  # flock held by the live writer
    assert other.pending() is None
    alive.close()
    assert other.adopt() == 1


def test_a_record_torn_by_a_crash_ends_the_segment_and_is_counted(tmp_path):
    writer = Spool(tmp_path, max_bytes=2**20)
    writer.append(records(4))
    path = writer._active.path
    writer.close()
    with open(path, "ab") as file:  # a crash mid-append: a header promising more than was written
        file.write(HEADER.pack(500, 0) + b"partial")
    heir = Spool(tmp_path, max_bytes=2**20)
    heir.adopt()
    assert ship_all(heir) == records(4)
    assert heir.torn == 1
    assert list(tmp_path.glob("*.seg")) == []


def test_a_flipped_byte_fails_the_checksum(tmp_path):
    writer = Spool(tmp_path, max_bytes=2**20)
    writer.append(records(3))
    path = writer._active.path
    writer.close()
    data = bytearray(path.read_bytes())
    data[HEADER.size + 28 + 3] ^= 0xFF  # inside the second record's payload
    path.write_bytes(bytes(data))
    heir = Spool(tmp_path, max_bytes=2**20)
    heir.adopt()
    assert ship_all(heir) == records(1)
    assert heir.torn == 1


def test_a_record_larger_than_one_read_is_read_whole(tmp_path):
    spool = Spool(tmp_path, max_bytes=2**24)
    big = b"x" * (spool_module.READ_BYTES + 10)
    spool.append([b"small", big, b"after"])
    first = spool.pending(max_bytes=16)
    assert first.records == [b"small"]
    spool.shipped(first)
    second = spool.pending(max_bytes=16)
    assert second.records == [big]
    spool.shipped(second)
    assert spool.pending().records == [b"after"]
    spool.close()


def test_skip_to_resumes_after_what_the_store_already_has(tmp_path):
    writer = Spool(tmp_path, max_bytes=2**20)
    writer.append(records(4))
    writer.close()
    heir = Spool(tmp_path, max_bytes=2**20)
    heir.adopt()
    segment = heir.segments[0]
    heir.skip_to(segment, 2 * (HEADER.size + 20))
    assert ship_all(heir) == records(4)[2:]


def test_fsync_runs_at_most_once_per_interval_unless_zero(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    lazy = Spool(tmp_path / "lazy", max_bytes=2**20, fsync_seconds=3600)
    for _ in range(5):
        lazy.append(records(1))
    assert len(synced) == 0
    lazy.close()
    assert len(synced) == 1, "close syncs what is left"
    synced.clear()
    eager = Spool(tmp_path / "eager", max_bytes=2**20, fsync_seconds=0)
    for _ in range(5):
        eager.append(records(1))
    assert len(synced) == 5
    eager.close()


@pytest.mark.parametrize("short", [1, 5, 11])
def test_a_failed_write_leaves_no_partial_record(tmp_path, monkeypatch, short):
    """The kernel takes part of the batch, then the disk fills: the segment is cut back to whole records."""
    spool = Spool(tmp_path, max_bytes=2**20)
    spool.append(records(1))
    real_write = os.write

    def short_writev(fd, parts):  # part of the batch reaches the file: a signal, a disk filling up
        return real_write(fd, b"".join(parts)[:short])

    def fail(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", short_writev)
    monkeypatch.setattr(os, "write", fail)
    with pytest.raises(OSError):
        spool.append(records(2))
    monkeypatch.undo()
    spool.append([b"later"])
    assert ship_all(spool) == [*records(1), b"later"]
    assert spool.torn == 0
    spool.close()


def test_a_short_writev_is_finished_with_plain_writes(tmp_path, monkeypatch):
    spool = Spool(tmp_path, max_bytes=2**20)
    real_write = os.write
    monkeypatch.setattr(os, "writev", lambda fd, parts: real_write(fd, b"".join(parts)[:7]))
    spool.append(records(3))
    monkeypatch.undo()
    assert ship_all(spool) == records(3)
    spool.close()


def test_the_age_is_the_oldest_waiting_records_not_the_segments(tmp_path, monkeypatch):
    """A quiet worker appends to one segment for hours: a record just appended has waited seconds."""
    now = [1_000_000.0]
    monkeypatch.setattr(spool_module.time, "time", lambda: now[0])
    spool = Spool(tmp_path, max_bytes=2**20)
    spool.append(records(1))
    now[0] += 3600
    spool.shipped(spool.pending())
    assert spool.oldest_age() == 0.0
    spool.append(records(1))  # the same segment, an hour old
    now[0] += 2
    assert spool.oldest_age() == 2.0
    spool.close()


def test_more_records_than_one_writev_takes_arrive_whole_and_in_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=2**22)
    many = records(spool_module.IOV_MAX)  # twice IOV_MAX buffers: a frame and a payload each
    spool.append(many)
    assert ship_all(spool) == many
    spool.close()
