"""Prometheus multiprocess files that survive the disk: where they live, when they are emptied,
how they are allocated, and what a dead worker leaves behind. Called from ``gunicorn.conf.py``
(the master) and ``service.monitoring.metrics`` (the workers); no Flask, no metric families.

* The folder is ``PROMETHEUS_MULTIPROC_DIR`` or, by default, memory-backed and per instance
  (``/dev/shm/sklearn-server-<uid>-metrics-<port>``), so a full disk cannot reach it.
* The master empties it in ``when_ready``, once the bind is ours: a second server started on a
  busy port exits before touching the running server's files.
* prometheus-client maps each file and grows it by truncating, which leaves holes; on a full
  filesystem the first write into a hole kills the worker with SIGBUS. ``AllocatedMmapedDict``
  reserves every byte (``posix_fallocate``) before the file is mapped or grown, so a full
  filesystem is an ``OSError`` at that moment, which the metrics layer counts and survives.
* A dead worker's live gauges are dropped and its counters, histograms and most-recent gauges
  are merged into one ``*_archive.db`` per kind, so a scrape reads a bounded number of files.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROJECT = "sklearn-server"
SHM = Path("/dev/shm")  # nosec B108  # noqa: S108  default_dir takes a folder there only if ours (uid, no link)
FALLBACK_DIR = Path("var") / "prometheus"
ARCHIVE = "archive"
#: Files prometheus-client writes (``counter_123.db``) and the archives we write (``counter_archive.db``).
DB_FILE_RE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_(\d+|archive)\.db")
#: Kinds whose dead files are merged: sums for counts, the newest value for ``mostrecent`` gauges.
#: Live gauges go with ``mark_process_dead``; other gauge modes are not used by this server.
MERGED_KINDS = ("counter", "histogram", "summary", "gauge_mostrecent")

log = logging.getLogger(__name__)


def _entry_size(key: str) -> int:
    """Bytes ``MmapedDict._init_value`` appends for ``key`` (length, padded key, value, timestamp)."""
    encoded = len(key.encode("utf-8"))
    return struct.calcsize("i") + encoded + (8 - (encoded + 4) % 8) + 16


def allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of real storage for ``fd``; ``OSError`` (ENOSPC) when the filesystem is full."""
    os.posix_fallocate(fd, 0, size)


class AllocatedMmapedDict(MmapedDict):
    """prometheus-client's mapped file, with every byte allocated before it is mapped or grown."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size == 0:
                    try:
                        allocate(fd, _INITIAL_MMAP_SIZE)
                    except OSError:
                        os.unlink(filename)  # an empty file would break every scrape
                        raise
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        capacity = self._capacity
        while self._used + _entry_size(key) > capacity:
            capacity *= 2
        if capacity > self._capacity:
            allocate(self._f.fileno(), capacity)  # before the library truncates and maps the new size
        super()._init_value(key)


def install() -> None:
    """Make prometheus-client create its multiprocess files through ``AllocatedMmapedDict`` in this process."""
    values.MmapedDict = AllocatedMmapedDict  # the name MultiProcessValue looks up when it opens a file


def multiprocess_dir() -> Path | None:
    """Return the multiprocess directory in force, or ``None`` in single-process mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def default_dir(port: int) -> Path:
    """Return this instance's folder: in memory (``/dev/shm``) when usable, else ``var/prometheus/<port>``."""
    if SHM.is_dir() and os.access(SHM, os.W_OK | os.X_OK):
        candidate = SHM / f"{PROJECT}-{os.getuid()}-metrics-{port}"
        try:
            st = candidate.lstat()
        except FileNotFoundError:
            return candidate
        # /dev/shm is shared by every user: never follow a link or use a folder someone else made.
        if candidate.is_dir() and not candidate.is_symlink() and st.st_uid == os.getuid():
            return candidate
        log.warning("not using a metrics folder in /dev/shm that is not ours", extra={"path": str(candidate)})
    return (FALLBACK_DIR / str(port)).absolute()


def prepare(path: str | os.PathLike[str]) -> Path:
    """Create and empty the metrics folder and export it to the workers forked later.

    Call it in the Gunicorn master once the listeners are bound and before any worker starts
    (``when_ready``). Only files named like prometheus-client's are removed, so a variable
    pointed at a shared folder by mistake cannot delete anything else.
    """
    folder = Path(path).absolute()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if DB_FILE_RE.fullmatch(entry.name) and entry.is_file():
            entry.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus-client picks its value class when first imported; if something imported it
    # before the variable existed, the workers would silently count in private memory.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    install()
    return folder


def mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges and merge its other files into the archives (from ``child_exit``)."""
    from prometheus_client import multiprocess

    folder = multiprocess_dir()
    if folder is None:
        return
    multiprocess.mark_process_dead(pid, str(folder))
    for kind in MERGED_KINDS:
        dead = folder / f"{kind}_{pid}.db"
        if dead.exists():
            merge_into_archive(dead, folder / f"{kind}_{ARCHIVE}.db", newest=kind == "gauge_mostrecent")


def merge_into_archive(dead: Path, archive: Path, *, newest: bool = False) -> None:
    """Add ``dead``'s values to ``archive`` (or keep the newer of two, with ``newest``), then remove ``dead``.

    The new archive is written beside the old and renamed over it, so a scrape reads the old
    archive or the new one; between the rename and the unlink a scrape could count the dead
    worker twice, a window of two system calls. On failure (a full disk) nothing is lost:
    the dead file stays and is read as before.
    """
    merged: dict[str, tuple[float, float]] = {}
    for source in (archive, dead):
        for key, value, timestamp in read_values(source):
            if newest:
                if key not in merged or timestamp >= merged[key][1]:
                    merged[key] = (value, timestamp)
            else:
                merged[key] = (merged.get(key, (0.0, 0.0))[0] + value, 0.0)
    scratch = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")  # not *.db: scrapes skip it
    try:
        target = AllocatedMmapedDict(str(scratch))
        try:
            for key, (value, timestamp) in merged.items():
                target.write_value(key, value, timestamp)
        finally:
            target.close()
        os.replace(scratch, archive)
        dead.unlink()
    except OSError:
        scratch.unlink(missing_ok=True)
        log.warning("could not merge a dead worker's metrics; its file stays", exc_info=True,
                    extra={"file": dead.name})


def read_values(path: Path) -> Iterator[tuple[str, float, float]]:
    try:
        for key, value, timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):
            yield key, value, timestamp
    except FileNotFoundError:
        return
