"""A large batch record's column bytes, kept in files beside a SQLite store instead of in its pages.

SQLite writes a 2.7 MB value (10,000 rows of 30 float64 features) as some 660 pages, each written
to the WAL and copied again at the checkpoint: about 2,000 system calls and 8-10 ms of CPU, a
quarter of what the request that made it cost. Appended to a file, the same bytes cost one
``pwritev``. So a record whose ``arrays`` reach ``MIN_BYTES`` keeps them here and its row holds a
reference (``arrays_ref``: file, offset, length, CRC-32); ``Store.arrays_of`` resolves it, and a
reference whose bytes are gone or damaged reads as missing, as an unreadable descriptor does.

Files are append-only, one per process and hour of the records' timestamps
(``<hour>-<pid>.blob``), so retention deletes whole files: an hour's file once every record of
that hour is past the cut-off (``purge``). Erasure rewrites a record in the database and
overwrites its old bytes here with zeros (``erase``). Durability: the bytes are in the page cache
when ``append`` returns (a killed process keeps them); the shipper, before it commits rows that
point here, has them put on disk at most once a second (``sync``), as the spool is: a machine crash
can take back the last second of bytes, and records pointing at them then read as missing (their
CRC says so), never as other numbers. PostgreSQL keeps every value in its rows (replicas on other hosts read
them): this is SQLite's alone. No Flask.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A record's ``arrays`` this large or larger go to a file; smaller ones stay in the row (a
#: 1-row record's few hundred bytes cost SQLite less than a file's bookkeeping would).
MIN_BYTES = 64 * 2**10
SUFFIX = ".blob"
HOUR = 3600
#: This process's files are synced at most this often (the spool's default ``SPOOL_FSYNC_SECONDS``):
#: a machine crash can take back the last second of bytes, whose records then read as missing.
SYNC_SECONDS = 1.0
#: Damaged references remembered (each logged and counted once) at most per process.
MAX_DAMAGED_KEPT = 10_000
#: A file is deleted for the size cap only when its hour ended this long ago, so records still
#: waiting in a spool (a store down for minutes, a dead worker's segment adopted later) keep their
#: bytes until they are shipped.
CAP_GRACE_SECONDS = 3600.0


def hour_of(ts: float) -> int:
    return int(ts // HOUR)


class BlobFiles:
    """The blob folder of one SQLite store: this process appends to its own files, any process reads."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._open: dict[int, tuple[str, int, int]] = {}  # hour -> (file name, fd, size): this process's files
        self._dirty: set[int] = set()  # fds written since the last sync
        self._synced = float("-inf")  # monotonic time of the last sync of this process's files
        #: Told once per reference this process finds gone or damaged (a counter of lost records)
        self.on_damaged: Callable[[], None] | None = None
        self._damaged: set[str] = set()  # references found gone or damaged: each logged and counted once

    def append(self, parts: Sequence[Any], ts: float) -> str:
        """Append ``parts`` (bytes-like, in order) to this process's file for ``ts``'s hour; return the
        reference a row keeps. Raises ``OSError`` (a full or read-only disk): the caller keeps the
        bytes in the row instead."""
        length = sum(memoryview(part).nbytes for part in parts)
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        with self._lock:
            name, fd, size = self._file(hour_of(ts))
            _pwrite_all(fd, parts, size, length)
            self._open[hour_of(ts)] = (name, fd, size + length)
            self._dirty.add(fd)
        return f"{name}:{size}:{length}:{crc:08x}"

    def _file(self, hour: int) -> tuple[str, int, int]:
        if self._pid != os.getpid():  # a forked child never writes to its parent's files
            self._open, self._dirty, self._pid = {}, set(), os.getpid()
        found = self._open.get(hour)
        if found is not None:
            return found
        for old in [h for h in self._open if h < hour]:  # the clock moved on: that hour is done here
            self._close(old)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{hour}-{os.getpid()}{SUFFIX}"
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._open[hour] = (name, fd, os.fstat(fd).st_size)
        return self._open[hour]

    def _close(self, hour: int) -> None:
        _, fd, _ = self._open.pop(hour)
        try:
            if fd in self._dirty:
                os.fdatasync(fd)
        finally:
            self._dirty.discard(fd)
            os.close(fd)

    def sync(self, names: set[str], *, force: bool = False) -> None:
        """Put the files ``names`` on disk before rows pointing at them commit: this process's own
        when written since and ``SYNC_SECONDS`` passed since the last time (or ``force``), others'
        (a dead worker's, whose records an adopted spool segment ships) always. Raises ``OSError``."""
        now = time.monotonic()
        with self._lock:
            mine = {name: fd for name, fd, _ in self._open.values()} if self._pid == os.getpid() else {}
            if not force and now - self._synced < SYNC_SECONDS:
                names = {name for name in names if name not in mine}
            else:
                self._synced = now
            for name in names:
                fd = mine.get(name)
                if fd is not None:
                    if fd in self._dirty:
                        os.fdatasync(fd)
                        self._dirty.discard(fd)
                    continue
                try:
                    other = os.open(self.folder / name, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # purged: its records read as missing
                try:
                    os.fsync(other)
                finally:
                    os.close(other)

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for hour in list(self._open):
                    self._close(hour)

    def read(self, ref: str) -> bytes | None:
        """The bytes ``ref`` points at, or None when they are gone (purged file) or damaged."""
        parsed = parse(ref)
        if parsed is None:
            return None
        name, offset, length, crc = parsed
        try:
            with open(self.folder / name, "rb") as file:
                file.seek(offset)
                data = file.read(length)
        except OSError:
            data = b""
        if len(data) != length or zlib.crc32(data) != crc:
            self._found_damaged(ref)
            return None
        return data

    def _found_damaged(self, ref: str) -> None:
        """Say once per reference (a window reads the same record again and again) that its bytes are lost."""
        if ref in self._damaged or len(self._damaged) >= MAX_DAMAGED_KEPT:
            return
        self._damaged.add(ref)
        log.warning("a logged batch's column bytes are missing or damaged; its inputs read as missing",
                    extra={"file": ref.partition(":")[0], "reference": ref})
        if self.on_damaged is not None:
            try:
                self.on_damaged()
            except Exception:  # nosec B110  # noqa: S110  counting must not fail a read
                pass

    def erase(self, ref: str) -> None:
        """Overwrite ``ref``'s bytes with zeros, on disk before returning (erasure). Raises ``OSError``."""
        parsed = parse(ref)
        if parsed is None:
            return
        name, offset, length, _ = parsed
        try:
            fd = os.open(self.folder / name, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # purged already: nothing left to overwrite
        try:
            zeros = bytes(min(length, 2**20))
            done = 0
            while done < length:
                done += os.pwrite(fd, zeros[:length - done], offset + done)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []

    def purge(self, before: float) -> int:
        """Delete the files whose hour ended at or before ``before`` (unix seconds); return how many."""
        deleted = 0
        for path in self.files():
            hour = _hour_of_name(path.name)
            if hour is not None and (hour + 1) * HOUR <= before:
                with self._lock:
                    for mine, (name, _, _) in list(self._open.items()):
                        if name == path.name:
                            self._close(mine)
                try:
                    path.unlink()
                    deleted += 1
                except FileNotFoundError:
                    pass
        return deleted

    def purge_unreferenced(self, oldest_referenced: float | None, now: float | None = None) -> int:
        """After the size cap trimmed the oldest records: delete the files older than every record
        still pointing here, once their hour ended ``CAP_GRACE_SECONDS`` ago."""
        limit = (time.time() if now is None else now) - CAP_GRACE_SECONDS
        return self.purge(limit if oldest_referenced is None else min(oldest_referenced, limit))


def parse(ref: str) -> tuple[str, int, int, int] | None:
    """``name:offset:length:crc`` -> its parts, or None for anything else (never a path elsewhere)."""
    try:
        name, offset, length, crc = ref.split(":")
        if "/" in name or "\\" in name or not name.endswith(SUFFIX) or name.startswith("."):
            return None
        return name, int(offset), int(length), int(crc, 16)
    except (AttributeError, ValueError):
        return None


def _hour_of_name(name: str) -> int | None:
    head = name.partition("-")[0]
    return int(head) if head.isdigit() else None


def _pwrite_all(fd: int, parts: Sequence[Any], offset: int, length: int) -> None:
    """Write ``parts`` at ``offset`` with ``pwritev``, however the kernel splits it."""
    done = os.pwritev(fd, list(parts), offset)
    if done < length:  # a short write (a signal, a nearly full disk): the rest plainly
        rest = memoryview(b"".join(parts))[done:]
        while rest:
            rest = rest[os.pwrite(fd, rest, offset + length - len(rest)):]
