"""A daemon thread that runs one job every N seconds until stopped, and outlives its errors.

The catalog's disk polling, the rollout guard and the alert loop are all this; each keeps its
job and says nothing here about threads. No Flask.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Call ``job`` every ``interval`` seconds (first call at once, or after one interval)."""

    def __init__(self, name: str, interval: float, job: Callable[[], object], *, wait_first: bool = False,
                 wait: Callable[[threading.Event, float], bool] | None = None):
        """``wait(stop, seconds)`` pauses between calls and returns True once stopped (tests pass their own)."""
        self.name = name
        self.interval = float(interval)
        self.job = job
        self.wait_first = wait_first
        self._wait = wait or threading.Event.wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; calling it again while it runs does nothing."""
        if self._thread is not None and self._thread.is_alive():
            if self._stop.is_set():
                raise RuntimeError(f"{self.name}: the previous thread has not stopped yet")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to finish and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():  # a job still running keeps its thread: start() will not add one
                self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self.wait_first and self._wait(self._stop, self.interval):
            return
        while not self._stop.is_set():
            try:
                self.job()
            except Exception:  # the thread that keeps the server current must outlive any one failure
                log.exception("periodic job failed; trying again next time", extra={"job": self.name})
            self._wait(self._stop, self.interval)
