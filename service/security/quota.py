"""Per-caller rate limits that every Gunicorn worker of one server shares: requests and rows per second.

Each caller (an API key id, or a client address in open mode) has one slot in a small table
that every worker maps from the same file in the metrics folder (``/dev/shm`` by default, see
``service.monitoring.multiproc``). A slot holds, per limit, a GCRA "theoretical arrival time"
(the generic cell rate algorithm: a token bucket kept as one number): a charge of ``cost``
moves it ``cost / rate`` seconds later, and is refused when that would put it more than
``burst / rate`` seconds ahead of now; the refusal says how long until it would fit.

Why not flask-limiter / ``limits``: their in-memory storage counts per process (each worker
would allow the whole rate), and the shared ones need a Redis or Memcached server. A 128 KiB
shared file with ``fcntl`` byte-range locks needs nothing running and costs a few microseconds
per check. The locks belong to the process, so a worker killed mid-update never leaves one
held; a slot it half wrote at worst forgets or repeats one charge (a time beyond any legal
value is forgotten). Every failure to create, map or lock the file lets the request through
(fail open), reported to ``on_failure``: a full ``/dev/shm`` must not turn into refusals or
500s. No Flask; the HTTP side is ``service.api.limits``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Name of the shared file in the metrics folder (not ``*.db``: the metrics code leaves it alone).
FILE_NAME = "ratelimit-v1.shm"
SLOTS = 4096
#: Neighbouring slots a caller may land in; all of them are locked together for one check.
PROBE = 8
#: Per slot: caller hash (u64), then one arrival time (f64) per limit.
LIMITS = ("requests", "rows")
SLOT = struct.Struct("<Q" + "d" * len(LIMITS))
FILE_MODE = 0o600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    """A sustained rate (per second) and how many units may arrive at once above it."""

    per_second: float
    burst: float

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        return self.burst * self.interval


@dataclass(frozen=True)
class Refusal:
    """Which limit a charge exceeded and how many seconds until it would fit."""

    limit: str
    wait: float
    rate: Rate

    @property
    def retry_after(self) -> int:
        """Whole seconds for ``Retry-After``: never below 1, so a client never retries at once."""
        return max(1, math.ceil(self.wait))


def _ignore(_reason: str) -> None:
    """The default failure listener."""


class QuotaTable:
    """The shared table of per-caller arrival times; ``charge`` checks and records one request or its rows.

    ``path`` None keeps the table in this process's memory (one process: tests, the CLI).
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, slots: int = SLOTS,
                 clock: Callable[[], float] = time.monotonic,
                 on_failure: Callable[[str], None] = _ignore) -> None:
        if slots < PROBE:
            raise ValueError(f"slots must be at least {PROBE}")
        self.path = Path(path) if path is not None else None
        self.slots = slots
        self._clock = clock  # CLOCK_MONOTONIC is one clock for every process of the machine
        self._on_failure = on_failure
        self._thread_lock = threading.Lock()  # fcntl locks do not exclude threads of one process
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._open()

    def _open(self) -> None:
        size = self.slots * SLOT.size
        if self.path is None:
            self._map = mmap.mmap(-1, size)
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            self._fail("open", exc)
            return
        try:
            # every byte reserved before mapping: a hole in a full tmpfs would be SIGBUS on first write
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except OSError as exc:
            os.close(fd)
            self._fail("allocate", exc)
            return
        self._fd = fd  # kept open: closing any descriptor of the file would drop this process's locks

    def _fail(self, what: str, exc: OSError) -> None:
        log.warning("rate limits are not enforced: the shared counters are unusable",
                    extra={"path": str(self.path), "step": what, "problem": exc.strerror})
        self._on_failure(what)

    @property
    def usable(self) -> bool:
        return self._map is not None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def charge(self, caller: str, limit: str, rate: Rate, cost: float = 1.0) -> Refusal | None:
        """Record ``cost`` units of ``limit`` for ``caller``; return the refusal instead when over the rate.

        A refused charge records nothing. Fails open (returns None) when the table is unusable.
        """
        if self._map is None or cost <= 0:
            if self._map is None:
                self._on_failure("unavailable")
            return None
        field = LIMITS.index(limit) + 1
        key = _caller_hash(caller)
        home = key % (self.slots - PROBE + 1)
        with self._thread_lock:
            try:
                self._lock(home, fcntl.LOCK_EX)
            except OSError as exc:
                self._fail("lock", exc)
                return None
            try:
                return self._charge_locked(home, key, field, limit, rate, cost)
            finally:
                self._lock(home, fcntl.LOCK_UN)

    def _lock(self, home: int, operation: int) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, operation, PROBE * SLOT.size, home * SLOT.size)

    def _charge_locked(self, home: int, key: int, field: int, limit: str, rate: Rate, cost: float) -> Refusal | None:
        now = self._clock()
        index, values = self._find(home, key, now)
        stored = values[field]
        if not math.isfinite(stored) or stored > now + rate.tolerance:
            # no charge leaves that (a torn write, a stricter setting since, a stale file): forget it
            stored = 0.0
        arrival = max(stored, now) + cost * rate.interval
        if arrival - now > rate.tolerance + 1e-9:
            return Refusal(limit, arrival - now - rate.tolerance, rate)
        values[0], values[field] = key, arrival
        SLOT.pack_into(self._map, index * SLOT.size, *values)
        return None

    def _find(self, home: int, key: int, now: float) -> tuple[int, list[float]]:
        """The caller's slot near ``home``; else a free or expired one; else the one nearest expiry."""
        free, soonest, soonest_at = None, home, math.inf
        for index in range(home, home + PROBE):
            values = list(SLOT.unpack_from(self._map, index * SLOT.size))
            if values[0] == key:
                return index, values
            latest = max(values[1:])
            if free is None and (values[0] == 0 or latest <= now):
                free = index
            if latest < soonest_at:
                soonest, soonest_at = index, latest
        # a new caller starts with a full bucket; evicting the slot nearest expiry forgives the least
        return (free if free is not None else soonest), [0, *([0.0] * len(LIMITS))]


def _caller_hash(caller: str) -> int:
    """A non-zero 64-bit hash of the caller (zero marks a free slot)."""
    value = int.from_bytes(hashlib.blake2b(caller.encode("utf-8", "replace"), digest_size=8).digest(), "little")
    return value or 1


class WorkSlots:
    """At most ``count`` heavy computations at once across every process that shares ``path``.

    Each slot is one byte-range lock taken without waiting: a worker that finds every slot held
    answers at once instead of queueing, so the others stay free for probes and predictions. A
    lock dies with its process. ``path`` None shares slots between this process's threads only;
    a file that cannot be opened lets every computation run (fail open, to ``on_failure``).
    """

    def __init__(self, path: str | os.PathLike[str] | None, count: int,
                 on_failure: Callable[[str], None] = _ignore) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self._locks = [threading.Lock() for _ in range(count)]  # fcntl locks do not exclude threads
        self._fd: int | None = None
        self._open_failed = False
        self._on_failure = on_failure
        if path is not None:
            try:
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
            except OSError as exc:
                log.warning("heavy computations are not limited across workers",
                            extra={"path": str(path), "problem": exc.strerror})
                self._open_failed = True

    def try_acquire(self) -> int | None:
        """Take a free slot and return its number (``release`` it), or None when all are busy."""
        if self._open_failed:
            self._on_failure("unavailable")
            return -1  # fail open: a slot that is no slot
        for index, lock in enumerate(self._locks):
            if not lock.acquire(blocking=False):
                continue
            if self._fd is None:
                return index
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
            except OSError:  # held by another worker (EAGAIN/EACCES)
                lock.release()
                continue
            return index
        return None

    def release(self, index: int) -> None:
        """Give back a slot ``try_acquire`` returned."""
        if index < 0:
            return
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, index)
        self._locks[index].release()
