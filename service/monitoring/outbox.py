"""Records on their way to the store: spooled to disk first, shipped in order, every loss counted.

The observer's writer thread hands ``put`` the records of what the worker answered (a request
row and, when logged, its encoded prediction batch). They go to the worker's on-disk spool
(``service.monitoring.spool``) at once; a shipper thread of its own (started in the worker,
never in a forking master) sends them to the store, one transaction per chunk, which also
notes how far the segment is committed (``spool_marks``): a segment adopted after its writer
died resumes after what the store already has, so a replay writes nothing twice. A store that
blocks holds only the shipper: answered records keep reaching the disk.

When the store fails (locked, full, read-only, unreachable) the records wait in the spool and
shipping is retried with back-off; each failure is counted by reason. Only when the spool
cannot take a record (over ``SPOOL_MAX_BYTES``, or its disk refuses) does a bounded memory
buffer hold it; past that the record is dropped, counted by reason and named in a warning line
once per interval. ``status`` says which of these is happening, for ``/readyz``. No Flask.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from service.monitoring import metrics
from service.monitoring.predlog import PredictionLog
from service.monitoring.record_format import unpack
from service.monitoring.spool import Chunk, Spool, SpoolFull
from service.store import REQUEST_COLUMNS, Store
from service.store.failures import reason_for

log = logging.getLogger(__name__)

#: Why a record can be dropped (a Prometheus label).
DROP_REASONS = ("queue_full", "spool_full", "spool_unwritable", "unreadable", "encoding_failed", "torn")
#: How far each spool segment is committed, written in the same transaction as its records.
MARKS_DDL = """
CREATE TABLE IF NOT EXISTS spool_marks (
    segment TEXT PRIMARY KEY,          -- a spool segment's file name (<pid>-<ns>.seg)
    position BIGINT NOT NULL,          -- bytes of it committed to this store
    ts DOUBLE PRECISION NOT NULL       -- unix seconds of that commit
);
"""
#: Records shipped in one transaction at most (bytes of spooled records).
CHUNK_BYTES = 2 * 2**20
#: Seconds a shipment gathers after the first record arrives: one transaction for a burst, not one
#: per request (each request spools its own record).
GATHER_SECONDS = 0.01
#: Back-off after a failed shipment: first wait, and the longest.
RETRY_FIRST, RETRY_MAX = 0.25, 15.0
#: How often an idle writer looks for segments left by workers gone before it.
ADOPT_SECONDS = 10.0
#: Seconds between two warning lines about dropped records (each drop is counted at once).
DROP_LOG_SECONDS = 10.0
#: Records older than this still waiting for the store make ``status`` say ``spooling``.
SPOOLING_AFTER_SECONDS = 5.0


class Outbox:
    """The spool, the shipping to the store, and the counts of what failed or was dropped."""

    def __init__(self, store: Store, prediction_log: PredictionLog | None, spool: Spool | None, *,
                 memory_bytes: int = 64 * 2**20, background: bool = True,
                 on_drop: Callable[[str, int], None] | None = None):
        self.store, self.log, self.spool = store, prediction_log, spool
        self.memory_bytes = memory_bytes
        self.background = background  # ship from a thread of its own (False: only when ``pump`` is called)
        self.on_drop = on_drop
        self.dropped: Counter[str] = Counter()  # since start, by reason
        self.failures: Counter[str] = Counter()  # failed shipments since start, by reason
        self._memory: deque[bytes] = deque()  # records the spool could not take, waiting for the store
        self._memory_size = 0
        self._retry_at = 0.0
        self._delay = RETRY_FIRST
        self._adopted_at = float("-inf")
        self._checked: set[str] = set()  # segments whose mark was read (ours need none)
        self._tears = 0  # the spool's torn segments already counted as drops
        self._spool_failing = False  # the spool's failure was logged; logged again once it recovers
        self._unlogged: Counter[str] = Counter()
        self._drop_logged = float("-inf")
        self._last_drop = float("-inf")
        self._lock = threading.Lock()  # the spool and the memory buffer: writer, shipper and ``close``
        self._shipping = threading.Lock()  # one pump at a time: a chunk is committed once
        self._wake = threading.Event()
        self._stopping = False
        self._shipper: threading.Thread | None = None
        self._shipper_pid: int | None = None
        self._sql = store.insert_sql("requests", REQUEST_COLUMNS)
        self._mark = store.insert_sql("spool_marks", ("segment", "position", "ts"), conflict="replace",
                                      key=("segment",))
        store.ensure_tables(MARKS_DDL)

    # -- taking records ----------------------------------------------------------------------

    def put(self, records: list[bytes]) -> None:
        """Spool ``records`` (the writer's thread); never raises."""
        if not records:
            return
        if self.background and self._shipper_pid != os.getpid():
            self.start()
        with self._lock:
            if self.spool is not None:
                try:
                    self.spool.append(records)
                    if self._spool_failing:
                        self._spool_failing = False
                        log.warning("the spool takes records again", extra={"folder": str(self.spool.folder)})
                    if not self._wake.is_set():
                        self._wake.set()
                    return
                except SpoolFull:
                    reason = "spool_full"
                except OSError as exc:
                    reason = "spool_unwritable"
                    if not self._spool_failing:
                        self._spool_failing = True
                        log.error("the spool could not be written; records wait in memory, then are dropped",
                                  extra={"folder": str(self.spool.folder), "error": f"{type(exc).__name__}: {exc}"})
            else:
                reason = "spool_unwritable"
            for record in records:  # the spool refused: a bounded buffer in memory, then drops
                if self._memory_size + len(record) > self.memory_bytes:
                    self.drop(reason)
                    continue
                self._memory.append(record)
                self._memory_size += len(record)
            self._wake.set()

    def drop(self, reason: str, count: int = 1) -> None:
        """Count records lost (``DROP_REASONS``) and say so in a warning line once per interval."""
        self.dropped[reason] += count
        self._unlogged[reason] += count
        self._last_drop = time.monotonic()
        if self.on_drop is not None:
            try:
                self.on_drop(reason, count)
            except Exception:  # nosec B110  # noqa: S110  counting must not fail the writer
                pass
        if self._last_drop - self._drop_logged >= DROP_LOG_SECONDS:
            self._drop_logged = self._last_drop
            log.warning("prediction records dropped: answered predictions are missing from the store",
                        extra={"dropped": dict(self._unlogged), "dropped_since_start": dict(self.dropped)})
            self._unlogged.clear()

    # -- shipping ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the shipper thread in this process (idempotent; after fork only)."""
        if self._shipper_pid == os.getpid():
            return
        with self._lock:
            if self._shipper_pid == os.getpid():
                return
            self._wake, self._stopping = threading.Event(), False
            self._shipper = threading.Thread(target=self._run, name="outbox-shipper", daemon=True)
            self._shipper_pid = os.getpid()
            self._shipper.start()

    def _run(self) -> None:
        wait = 0.0
        while not self._stopping:
            if self._wake.wait(wait) and not self._stopping:
                time.sleep(GATHER_SECONDS)  # records of requests answered meanwhile ride the same transaction
            # Cleared only now: while records gather, ``put`` sees the event set and skips setting it.
            self._wake.clear()
            if self._stopping:
                return
            try:
                wait = self.pump(stoppable=True)
            except Exception:  # the shipper must never die
                log.exception("shipping records to the store failed")
                wait = RETRY_MAX

    def pump(self, deadline: float | None = None, *, stoppable: bool = False) -> float:
        """Ship what waits until done, the store fails or ``deadline`` (monotonic) passes (or, for
        the shipper, ``close`` began: it ships what is left itself); return the seconds until the
        next try is due."""
        try:
            with self._shipping:
                return self._pump(deadline, stoppable)
        finally:
            if self.spool is not None:
                with self._lock:
                    spooled, age = self.spool.bytes, self.spool.oldest_age()
                metrics.observe_spool(spooled, age)

    def _pump(self, deadline: float | None, stoppable: bool = False) -> float:
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        if self.spool is not None and now - self._adopted_at >= ADOPT_SECONDS:
            self._adopted_at = now
            with self._lock:
                self.spool.adopt()
        while (deadline is None or time.monotonic() < deadline) and not (stoppable and self._stopping):
            try:
                if not self._ship_next():
                    self._forget_marks()
                    break
            except sqlite3.Error as exc:
                reason = reason_for(exc)
                self.failures[reason] += 1
                self.store.write_failed("records", exc)
                self._retry_at = time.monotonic() + self._delay
                self._delay = min(self._delay * 2, RETRY_MAX)
                return self._retry_at - time.monotonic()
        else:
            return 0.0  # out of time with more to ship
        self._delay = RETRY_FIRST
        return ADOPT_SECONDS

    def _ship_next(self) -> bool:
        """Commit the oldest waiting chunk; False when nothing waits. Raises ``sqlite3.Error``.

        The lock covers the spool's bookkeeping only, never the transaction: ``put`` goes on
        appending while the store takes its time.
        """
        with self._lock:
            chunk = self.spool.pending(CHUNK_BYTES) if self.spool is not None else None
            torn = self.spool.torn - self._tears if self.spool is not None else 0
            self._tears += torn
        if torn:  # what followed the tear in each is lost, how many records that was is unknown
            self.drop("torn", torn)
        if chunk is not None:
            if chunk.segment.name not in self._checked:
                if self._resume(chunk):
                    return True  # read again from where the store's mark says
            self._commit(chunk.records, chunk)
            with self._lock:
                self.spool.shipped(chunk)
            return True
        with self._lock:
            records, size = [], 0
            while self._memory and size < CHUNK_BYTES:
                records.append(self._memory.popleft())
                size += len(records[-1])
            self._memory_size -= size
        if not records:
            return False
        try:
            self._commit(records, None)
        except sqlite3.Error:
            with self._lock:
                self._memory.extendleft(reversed(records))
                self._memory_size += size
            raise
        return True

    def _resume(self, chunk: Chunk) -> bool:
        """Skip what a transaction already committed from this segment (its writer died after the
        commit, before noting it); True when that moved the segment on."""
        segment = chunk.segment
        rows = self.store.fetch("SELECT position FROM spool_marks WHERE segment = ?", (segment.name,))
        self._checked.add(segment.name)
        if not rows or int(rows[0][0]) <= segment.shipped:
            return False
        with self._lock:
            self.spool.skip_to(segment, int(rows[0][0]))
        return True

    def _commit(self, records: list[bytes], chunk: Chunk | None) -> None:
        rows, batches, unreadable = [], [], 0
        for record in records:
            try:
                request, batch = unpack(record)
            except ValueError:
                unreadable += 1
                continue
            if request is not None:
                rows.append(request)
            if batch is not None and self.log is not None:
                batches.append(batch)
        files = {ref.partition(":")[0] for batch in batches if (ref := batch.arrays_ref)}
        if files and self.store.blobs is not None:
            try:  # on disk at most a second after the rows pointing at them (the spool's own policy)
                self.store.blobs.sync(files)
            except OSError as exc:
                raise sqlite3.OperationalError(f"blob files could not be synced: {exc}") from exc
        with self.store.transaction() as db:
            if rows:
                db.executemany(self._sql, rows)
            if batches:
                self.log.write_encoded(db, *batches)
            if chunk is not None:
                db.execute(self._mark, (chunk.segment.name, chunk.end, time.time()))
        self.store.write_succeeded()
        if unreadable:  # counted once, with the chunk that skipped them (a failed try counts nothing)
            log.error("spooled records cannot be read; they are dropped", extra={"records": unreadable})
            self.drop("unreadable", unreadable)

    def _forget_marks(self) -> None:
        """Delete the marks of segments shipped whole and deleted: only an adopted segment's file
        needs one. A mark goes only after its file, so a crash between them leaves a mark, never a
        file without one; a failed delete is tried again after the next removal."""
        with self._lock:
            names = list(self.spool.removed) if self.spool is not None else []
        if not names:
            return
        try:
            with self.store.transaction() as db:
                db.executemany("DELETE FROM spool_marks WHERE segment = ?", [(name,) for name in names])
        except sqlite3.Error:
            return
        with self._lock:
            del self.spool.removed[:len(names)]

    # -- state -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``ok``; ``spooling`` (the store has not taken records for a while: they wait on disk);
        ``degraded`` (records were dropped in the last minute)."""
        spooled = self.spool.bytes if self.spool is not None else 0
        age = self.spool.oldest_age() if self.spool is not None else 0.0
        state = "ok"
        if spooled and age > SPOOLING_AFTER_SECONDS or self._memory:
            state = "spooling"
        if time.monotonic() - self._last_drop < 60.0:
            state = "degraded"
        return {"status": state, "spooled_bytes": spooled, "waiting_in_memory": len(self._memory),
                "oldest_seconds": round(age, 1), "dropped": dict(self.dropped),
                "store_failures": dict(self.failures)}

    def close(self, deadline: float) -> bool:
        """Stop the shipper, ship what the store takes before ``deadline`` (monotonic), then release
        the spool; True when nothing is left waiting (what is left on disk goes to the next worker).

        A shipper still in a transaction at the deadline keeps the spool: its files stay open and
        locked until this process ends, so no other worker adopts a segment whose commit may
        still land (it would commit the chunk again), and no descriptor is closed under it.
        """
        self._stopping = True
        self._wake.set()
        shipping = False
        if self._shipper is not None and self._shipper_pid == os.getpid():
            self._shipper.join(max(deadline - time.monotonic(), 0.0))
            shipping = self._shipper.is_alive()
        self._retry_at = 0.0
        while not shipping and time.monotonic() < deadline:
            wait = self.pump(deadline)
            if wait == ADOPT_SECONDS:
                break
            time.sleep(min(max(wait, 0.01), max(deadline - time.monotonic(), 0.0)))
        with self._lock:
            if self._memory and self.spool is not None:
                try:  # the spool may take now what it refused before: the next worker ships it
                    self.spool.append(list(self._memory))
                    self._memory.clear()
                    self._memory_size = 0
                except OSError:
                    pass
            if self._memory:
                self.drop("spool_full" if self.spool is not None else "spool_unwritable", len(self._memory))
                self._memory.clear()
                self._memory_size = 0
            left = self.spool.bytes if self.spool is not None else 0
            if self.spool is not None and not shipping:
                self.spool.close()
        if not shipping and time.monotonic() < deadline:
            self._forget_marks()  # segments close() deleted, shipped whole
        return left == 0 and not shipping
