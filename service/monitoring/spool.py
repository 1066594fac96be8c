"""The on-disk spool between a worker's recorder and the store: what was answered survives the store.

A worker appends each record (bytes) to its own segment file before the store sees it, and
ships segments to the store in order, deleting each once all of it is committed. So a store that
is slow, locked, full, read-only or down costs no records, only spool space; a worker that
exits or dies leaves its segments behind, and any live worker adopts them (a segment is owned
while its writer holds an exclusive ``flock`` on it: the lock dies with the process).

Framing, per record: ``length`` (4 bytes) ``crc32`` (4 bytes) then the payload. A record torn by
a crash mid-append fails its length or checksum and ends that segment's readable part (counted
as torn). Durability: appends are ``write(2)`` calls, in the page cache at once, so a killed
process loses nothing it appended; ``fsync`` runs at most every ``fsync_seconds``, so a machine
crash loses at most that long of appended records. The spool never grows past ``max_bytes``:
``append`` raises ``SpoolFull`` and the caller counts the drop. No Flask.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
SUFFIX = ".seg"
#: A segment is closed and a new one started past this size, so shipped data leaves the disk soon.
DEFAULT_SEGMENT_BYTES = 8 * 2**20
#: Bytes read from a segment per step when shipping (a record larger than this is read whole).
READ_BYTES = 4 * 2**20
#: Buffers one ``writev`` takes at most (Linux's IOV_MAX).
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class SpoolFull(OSError):
    """The spool holds ``max_bytes`` already: the record was not appended."""


@dataclass
class Segment:
    """One segment file: written by its owner, shipped from ``shipped`` on."""

    path: Path
    fd: int
    size: int
    shipped: int = 0  # bytes from the start already committed to the store
    sealed: bool = False  # no more appends: delete once shipped to the end
    torn: bool = False  # a damaged record ends what can be read
    waiting_since: float | None = None  # unix time its oldest unshipped record was appended (at most)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def unshipped(self) -> int:
        return self.size - self.shipped


@dataclass
class Chunk:
    """Consecutive records of one segment, ready to ship: commit them, then ``Spool.shipped(chunk)``."""

    segment: Segment
    start: int
    end: int
    records: list[bytes] = field(default_factory=list)


class Spool:
    """This process's segments, plus those it adopted from workers gone before it."""

    def __init__(self, folder: Path | str, *, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 fsync_seconds: float = 1.0):
        if max_bytes < 1 or segment_bytes < 1 or fsync_seconds < 0:
            raise ValueError("max_bytes and segment_bytes must be positive and fsync_seconds not negative")
        self.folder = Path(folder)
        self.max_bytes, self.segment_bytes, self.fsync_seconds = max_bytes, segment_bytes, fsync_seconds
        self.segments: list[Segment] = []  # oldest first: adopted ones, then ours; the last may be active
        self.torn = 0  # damaged records found (a crash mid-append), never shipped
        self.removed: list[str] = []  # names of segments deleted, shipped whole: their marks can go
        self._active: Segment | None = None
        self._synced = time.monotonic()
        self._dirty = False
        self._pid = os.getpid()

    # -- writing ------------------------------------------------------------------------------

    def append(self, records: list[bytes]) -> None:
        """Append ``records`` to the active segment in one write; raise ``SpoolFull`` or ``OSError``."""
        if not records:
            return
        parts: list[Any] = []
        for record in records:  # each record's frame and payload as they are: no copy before the kernel's
            parts += (HEADER.pack(len(record), zlib.crc32(record)), record)
        size = sum(map(len, parts))
        if self.bytes + size > self.max_bytes:
            raise SpoolFull(f"spool holds {self.bytes} of {self.max_bytes} bytes")
        segment = self._writable()
        if segment.unshipped <= 0:
            segment.waiting_since = time.time()
        try:
            _write_all(segment.fd, parts, size)
        except OSError:
            try:  # a partial record would end the segment's readable part: cut it off
                os.ftruncate(segment.fd, segment.size)
            except OSError:
                self._seal(segment)  # cannot cut: append no more here (readers stop at the tear)
            raise
        segment.size += size
        self._dirty = True
        if segment.size >= self.segment_bytes:
            self._seal(segment)
        self.sync(force=False)

    def sync(self, *, force: bool = True) -> None:
        """fsync the active segment if ``fsync_seconds`` passed since the last one (or now, ``force``)."""
        if not self._dirty or self._active is None:
            return
        now = time.monotonic()
        if force or now - self._synced >= self.fsync_seconds:
            os.fsync(self._active.fd)
            self._synced, self._dirty = now, False

    def _writable(self) -> Segment:
        if self._active is None or self._pid != os.getpid():
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{os.getpid()}-{time.time_ns()}{SUFFIX}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else can hold it
            self._active, self._pid = Segment(path, fd, 0), os.getpid()
            self.segments.append(self._active)
        return self._active

    def _seal(self, segment: Segment) -> None:
        try:
            self.sync(force=True)
        except OSError:
            log.exception("spool fsync failed", extra={"segment": segment.name})
        segment.sealed = True
        if segment is self._active:
            self._active = None

    # -- shipping ------------------------------------------------------------------------------

    def adopt(self) -> int:
        """Take over segments no live process holds (a worker that exited or died); return how many."""
        known = {s.path for s in self.segments}
        found = 0
        try:
            paths = sorted(self.folder.glob(f"*{SUFFIX}"), key=_age)
        except OSError:
            return 0
        for path in paths:
            if path in known:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue  # shipped and deleted by another worker meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # its writer (or another adopter) is alive
            if not path.exists():  # deleted between the glob and the lock: nothing to ship
                os.close(fd)
                continue
            segment = Segment(path, fd, os.fstat(fd).st_size, sealed=True, waiting_since=_age(path) / 1e9)
            self.segments.insert(sum(1 for s in self.segments if s.sealed and s is not self._active), segment)
            found += 1
        if found:
            log.info("spooled records adopted from workers gone before this one", extra={"segments": found})
        return found

    def pending(self, max_bytes: int = READ_BYTES) -> Chunk | None:
        """Read the oldest unshipped records (about ``max_bytes`` of them, at least one); None when none."""
        for segment in list(self.segments):
            if segment.unshipped <= 0 or segment.torn:
                if segment.sealed and segment is not self._active:
                    self._remove(segment)
                continue
            chunk = self._read(segment, max_bytes)
            if chunk.records:
                return chunk
            if segment.torn and segment.sealed:
                self._remove(segment)
        return None

    def skip_to(self, segment: Segment, position: int) -> None:
        """Mark ``segment`` shipped up to ``position`` (what the store says it already committed)."""
        segment.shipped = max(segment.shipped, min(position, segment.size))

    def shipped(self, chunk: Chunk) -> None:
        """The chunk is committed: advance its segment, and delete the segment once shipped whole."""
        segment = chunk.segment
        segment.shipped = max(segment.shipped, chunk.end)
        if segment.shipped >= segment.size:
            segment.waiting_since = None
            if segment.sealed:
                self._remove(segment)

    def _read(self, segment: Segment, max_bytes: int) -> Chunk:
        start, fd = segment.shipped, segment.fd
        data = os.pread(fd, min(max(max_bytes, HEADER.size), segment.unshipped), start)
        records: list[Any] = []  # views of ``data``
        offset = 0
        while offset < max_bytes and start + offset < segment.size:
            if offset + HEADER.size > len(data):
                if records:
                    break  # the next chunk starts here
                data += os.pread(fd, offset + HEADER.size - len(data), start + len(data))
                if offset + HEADER.size > len(data):
                    self._tear(segment)  # a header cut short: the tail of a crashed append
                    break
            length, crc = HEADER.unpack_from(data, offset)
            if length == 0:  # never written (a record is never empty): the zeros a machine crash leaves
                self._tear(segment)
                break
            end = offset + HEADER.size + length
            if end > len(data):
                if records:
                    break
                if start + end > segment.size:
                    self._tear(segment)
                    break
                data += os.pread(fd, end - len(data), start + len(data))  # one record larger than a read
            payload = memoryview(data)[offset + HEADER.size:end]  # a view: shipped as is, never copied
            if len(payload) != length or zlib.crc32(payload) != crc:
                self._tear(segment)
                break
            records.append(payload)
            offset = end
        return Chunk(segment, start, start + offset, records)

    def _tear(self, segment: Segment) -> None:
        if not segment.torn:
            segment.torn = True
            self.torn += 1
            log.error("a spooled record is damaged (a crash mid-write?); the rest of its segment is skipped",
                      extra={"segment": segment.name, "at": segment.shipped})

    def _remove(self, segment: Segment) -> None:
        try:
            segment.path.unlink(missing_ok=True)
            self.removed.append(segment.name)
        finally:
            os.close(segment.fd)
            self.segments.remove(segment)

    # -- state -------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes spooled and not yet shipped."""
        return sum(s.unshipped for s in self.segments if not s.torn)

    def oldest_age(self) -> float:
        """Seconds the oldest unshipped record has waited, at most (0 when all is shipped)."""
        since = [s.waiting_since for s in self.segments if s.unshipped > 0 and not s.torn and s.waiting_since]
        return max(0.0, time.time() - min(since)) if since else 0.0

    def close(self) -> None:
        """fsync and release every segment this process holds; unshipped ones wait for the next worker."""
        if self._active is not None:
            try:
                self.sync(force=True)
            except OSError:
                log.exception("spool fsync failed at close", extra={"segment": self._active.name})
        for segment in list(self.segments):
            if segment.unshipped <= 0 and (segment.sealed or segment is self._active):
                self._remove(segment)
            else:
                os.close(segment.fd)
        self.segments, self._active = [], None


def _write_all(fd: int, parts: list[Any], size: int) -> None:
    """Write ``parts`` (``size`` bytes in all) in order with ``writev``, however the kernel splits it."""
    written = 0
    for start in range(0, len(parts), IOV_MAX):
        group = parts[start:start + IOV_MAX]
        done = os.writev(fd, group)
        written += done
        if done < sum(map(len, group)):
            break
    if written < size:  # a short write (a signal, a nearly full disk): the rest in plain writes
        rest = memoryview(b"".join(parts))[written:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _age(path: Path) -> int:
    """A segment's start time in ns, from its name (``<pid>-<ns>.seg``)."""
    try:
        return int(path.stem.rpartition("-")[2])
    except ValueError:
        return 0
