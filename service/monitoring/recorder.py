"""One background writer per worker: what the observer records is queued here, handed off in batches.

The request's thread only appends to a bounded deque (no lock to wait on, no I/O). A daemon
thread, started in the worker on first use or by ``start`` (never in a forking master), wakes
when something is queued, lets a batch gather for ``interval`` seconds, and hands everything
waiting to ``write`` in one call (the observer spools it to disk; another thread ships the
spool to the store, so a slow store never holds this one). The queue is bounded in items and in rows
(``weight``): when full, the new item is dropped and counted (``on_drop``), so recording never
blocks or fails a prediction and a burst of large batches cannot grow the worker's memory
without bound. ``close`` drains what is left; Gunicorn's ``worker_exit`` hook calls it. No Flask.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Items waiting at most, per worker; past it new items are dropped (and counted), never waited on.
DEFAULT_CAPACITY = 10_000
#: Rows (the items' weights) waiting at most, per worker: bounds the memory a burst of large batches holds.
DEFAULT_CAPACITY_ROWS = 200_000
#: Items written in one transaction at most.
DEFAULT_BATCH_SIZE = 512
#: Seconds a batch may gather after the first item arrives: a few ms turns a burst into one write.
DEFAULT_INTERVAL = 0.005
#: Seconds between two "queue full" log lines (each drop is counted; the log need not say each one).
DROP_LOG_SECONDS = 10.0


def _ignore(*_args: Any) -> None:
    """The default drop listener: nobody counts."""


class Recorder:
    """A bounded queue and the one thread that empties it in batches."""

    def __init__(self, write: Callable[[list[Any]], None], *, capacity: int = DEFAULT_CAPACITY,
                 capacity_rows: int = DEFAULT_CAPACITY_ROWS, batch_size: int = DEFAULT_BATCH_SIZE,
                 interval: float = DEFAULT_INTERVAL, on_drop: Callable[[int], None] = _ignore,
                 name: str = "recorder"):
        if capacity < 1 or capacity_rows < 1 or batch_size < 1 or interval < 0:
            raise ValueError("capacity, capacity_rows and batch_size must be positive and interval not negative")
        self.write, self.capacity, self.batch_size, self.interval = write, capacity, batch_size, interval
        self.capacity_rows = capacity_rows
        self.on_drop, self.name = on_drop, name
        self.dropped = 0
        self._rows = 0  # the weights of the items waiting
        self._rows_lock = threading.Lock()  # += from request threads and -= from the writer must not race
        self._items: deque[tuple[Any, int]] = deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._closing = False
        self._last_drop_log = float("-inf")

    def put(self, item: Any, weight: int = 1) -> bool:
        """Queue ``item`` (``weight`` rows) for the writer; False (and counted) when full or closed."""
        if self.offer(item, weight):
            return True
        self._drop()
        return False

    def offer(self, item: Any, weight: int = 1) -> bool:
        """Queue ``item`` like ``put``, but leave a refusal to the caller: nothing is counted."""
        if self._closing or len(self._items) >= self.capacity or (self._items and self._rows + weight > self.capacity_rows):
            return False
        if self._pid != os.getpid():
            self._start()
        with self._rows_lock:
            self._rows += weight
        self._items.append((item, weight))
        if not self._wake.is_set():
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return len(self._items)

    def close(self, timeout: float = 10.0) -> bool:
        """Write everything queued and stop the thread; True when the queue was emptied in time."""
        self._closing = True
        self._wake.set()
        thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout)
        else:
            self._drain()  # no writer in this process (never started, or inherited across fork)
        return not self._items

    def flush(self) -> None:
        """Write what is queued now, in the caller's thread (tests, and a final drain)."""
        self._drain()

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # forked: the parent's queue, event and thread are not ours
                self._items, self._wake, self._rows = deque(), threading.Event(), 0
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._pid = os.getpid()
            self._thread.start()
            atexit.register(self.close, 5.0)  # any WSGI server's normal exit; Gunicorn's worker_exit comes first

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing and self.interval:
                time.sleep(self.interval)  # let a burst gather into one batch
            # Cleared only now: while the batch gathers, ``put`` sees the event set and skips
            # Event.set (a lock and a notify), so a busy worker pays for one wake per batch.
            self._wake.clear()
            self._drain()
            if self._closing:
                return

    def _drain(self) -> None:
        while self._items:
            batch = []
            while self._items and len(batch) < self.batch_size:
                item, weight = self._items.popleft()
                with self._rows_lock:
                    self._rows -= weight
                batch.append(item)
            try:
                self.write(batch)
            except Exception:  # a writer must never die: the next batch gets its chance
                log.exception("writing recorded items failed; they are lost", extra={"items": len(batch)})
                self._drop(len(batch))

    def _drop(self, count: int = 1) -> None:
        self.dropped += count
        try:
            self.on_drop(count)
        except Exception:  # nosec B110  # noqa: S110  counting a drop must not fail the request that caused it
            pass  # counting a drop must not fail the request that caused it
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_SECONDS:
            self._last_drop_log = now
            log.warning("recording queue full: items dropped", extra={"dropped": self.dropped,
                                                                     "capacity": self.capacity})
