"""Leadership: which one of the processes sharing a store runs a periodic job right now.

A lock taken without waiting: a ``flock`` on a file next to a SQLite database, a session
advisory lock on PostgreSQL (so one leader for all replicas). The first to take it keeps it
until it stops or dies, when the lock is released and the next one to try takes over. The
same lock elects the alert evaluator and the retention job. No Flask.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from service.store import Store


class Leadership:
    """Hold the store-wide lock ``name`` once taken; ``lead`` tells whether this process holds it."""

    def __init__(self, store: Store, name: str, lock_path: Path | str | None = None):
        self.store = store
        self.name = name
        self.lock_path = Path(lock_path) if lock_path else store.lock_path(name)  # None: a database lock
        self._held: Any = None

    def lead(self) -> bool:
        """Take the lock if nobody holds it; True while this process holds it. Raises ``sqlite3.Error``
        when the PostgreSQL server cannot be asked."""
        if self._held is not None:
            if not self._held.closed:
                return True
            self._held = None  # the database session, and its lock, ended: elect again
        if self.lock_path is None:
            self._held = self.store.hold_lock(self.name)
            return self._held is not None
        f = open(self.lock_path, "a+")  # held open for as long as we lead
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._held = f
        return True

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases a flock; the session, an advisory lock)."""
        if self._held is not None:
            self._held.close()
            self._held = None
