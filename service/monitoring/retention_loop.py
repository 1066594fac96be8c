"""The retention job: the prediction log kept within its age limit and its size cap, by itself.

Every worker runs the loop; one at a time does the work, elected like the alert evaluator (a
``flock`` next to SQLite, a session advisory lock on PostgreSQL: ``service.store.election``).
Every ``tick`` seconds the leader checks the cap (a cheap bound first, see
``retention.trim_log``) and, when ``every_seconds`` have passed since the last purge by any
process (kept in the store, so a recycled worker does not reset it), deletes what is older than
the age limit, as ``python -m service purge`` does. Deleting happens in short transactions, so
predictions never wait on it. After each round the leader hands on the store's ``maintenance``
marks (when the purge, and the last ``backup``, ran to the end) for /metrics. Nothing here runs
on a request, and nothing imports Flask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from service.periodic import Periodic
from service.store import Store, retention
from service.store.election import Leadership

log = logging.getLogger(__name__)

#: Seconds between two checks of the cap (two index seeks while under it).
CAP_CHECK_SECONDS = 60.0
#: The election lock, and the ``maintenance`` row that says when the age purge last ran.
LOCK = JOB = "retention"


def _ignore(_reason: str, _rows: int) -> None:
    """The default listener for deleted rows: nobody counts."""


def _ignore_marks(_marks: dict[str, float]) -> None:
    """The default listener for the maintenance marks: nobody publishes them."""


class RetentionLoop:
    """Purge by age every ``every_seconds`` and trim to ``max_rows`` every ``tick``, in one process at a time."""

    def __init__(self, store: Store, *, older_than_seconds: float, every_seconds: float, max_rows: int,
                 tick: float = CAP_CHECK_SECONDS, clock: Callable[[], float] = time.time,
                 on_deleted: Callable[[str, int], None] = _ignore, lock_path: Path | str | None = None,
                 on_marks: Callable[[dict[str, float]], None] = _ignore_marks):
        self.store = store
        self.older_than_seconds = older_than_seconds  # 0: no age limit
        self.every_seconds = every_seconds  # 0: no age purge
        self.max_rows = max_rows  # 0: no cap
        self.clock = clock
        #: Called as ``on_deleted(reason, predictions)`` with reason "age" or "cap", e.g. to count a metric.
        self.on_deleted = on_deleted
        #: Called with every ``maintenance`` row ({task: last run}) after each round the leader runs, so
        #: /metrics shows how old the last purge and the last backup (written by the CLI) are.
        self.on_marks = on_marks
        self.runs = self.failures = 0
        self._leader = Leadership(store, LOCK, lock_path)
        self._mark = store.insert_sql("maintenance", ("job", "last_run"), conflict="replace", key=("job",))
        interval = min(tick, every_seconds) if every_seconds else tick
        self._loop = Periodic("retention-loop", interval, self.run_once, wait_first=True)

    @property
    def enabled(self) -> bool:
        return bool(self.max_rows or (self.every_seconds and self.older_than_seconds))

    def start(self) -> None:
        """Start the daemon thread (idempotent); the first check comes after one tick."""
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and give up the leader's lock."""
        self._loop.stop(timeout)
        self._leader.release()

    def run_once(self) -> dict[str, dict[str, int]] | None:
        """Trim and purge now if this process leads and each is due; return what was deleted per job
        (None when another process leads or it failed). Never raises."""
        try:
            if not self._leader.lead():
                return None
            done: dict[str, dict[str, int]] = {}
            if self.max_rows:
                done["cap"] = retention.trim_log(self.store, self.max_rows)
                self._deleted("cap", done["cap"])
            now = self.clock()
            if self.every_seconds and self.older_than_seconds and self._due(now):
                done["age"] = self.store.purge(self.older_than_seconds, now)
                self._deleted("age", done["age"])
                with self.store.transaction() as db:
                    db.execute(self._mark, (JOB, now))
            self.on_marks({job: float(last) for job, last in self.store.fetch("SELECT job, last_run FROM maintenance")})
            self.runs += 1
            return done
        except Exception:  # the loop must outlive anything: a database down, a disk full
            self.failures += 1
            log.exception("retention round failed; trying again next tick")
            return None

    def _due(self, now: float) -> bool:
        found = self.store.fetch("SELECT last_run FROM maintenance WHERE job = ?", (JOB,))
        return not found or now - found[0][0] >= self.every_seconds

    def _deleted(self, reason: str, counts: dict[str, int]) -> None:
        rows = counts.get("predictions", 0)
        if not rows:
            return
        log.info("prediction log trimmed", extra={"reason": reason, **counts})
        try:
            self.on_deleted(reason, rows)
        except Exception:
            log.exception("counting deleted rows failed")
