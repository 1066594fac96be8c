"""The checkpoint job: the audit chain's head signed into the checkpoint file, by itself.

Every worker runs the loop; one at a time (elected like the retention job, ``service.store.
election``) appends a checkpoint every ``every_seconds`` when the chain grew. After an admin
change the worker that made it writes one at once, whoever leads: the file's lock orders
writers, and a change should not wait for the next tick to be anchored. Every worker publishes
the newest checkpoint (its seq and time) to /metrics. Nothing here runs a request's work, nothing
raises into one, and nothing imports Flask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from service.periodic import Periodic
from service.security import checkpoint, signing
from service.store import Store
from service.store.election import Leadership

log = logging.getLogger(__name__)

LOCK = "audit-checkpoint"


def _ignore(_point: checkpoint.Checkpoint) -> None:
    """The default listener for the newest checkpoint: nobody publishes it."""


class CheckpointLoop:
    """Append a signed checkpoint of the chain head every ``every_seconds`` (0: only on ``after_change``)."""

    def __init__(self, store: Store, key_file: Path, path: Path, every_seconds: float, *,
                 on_checkpoint: Callable[[checkpoint.Checkpoint], None] = _ignore, lock_path: Path | str | None = None):
        self.store = store
        self.path = Path(path)
        self.key = signing.load_private_key(key_file)  # read at start: a bad key fails the boot, not a tick
        self.on_checkpoint = on_checkpoint
        self.written = self.failures = 0
        self._leader = Leadership(store, LOCK, lock_path)
        self._loop = Periodic("audit-checkpoints", every_seconds, self.run_once, wait_first=True) if every_seconds else None

    def start(self) -> None:
        """Publish the newest checkpoint and start the daemon thread (idempotent)."""
        self._publish()
        if self._loop is not None:
            self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None:
            self._loop.stop(timeout)
        self._leader.release()

    def run_once(self) -> checkpoint.Checkpoint | None:
        """Write a checkpoint if this process leads and the chain grew; return it. Never raises."""
        try:
            leads = self._leader.lead()
        except Exception:  # the database does not answer: no leader this tick
            leads = False
        point = self.write() if leads else None
        self._publish()
        return point

    def after_change(self) -> checkpoint.Checkpoint | None:
        """Anchor the chain now (an admin change was just recorded); never raises."""
        point = self.write()
        self._publish()
        return point

    def write(self) -> checkpoint.Checkpoint | None:
        try:
            point = checkpoint.write(self.store, self.key, self.path)
        except Exception as exc:  # a broken chain, a full disk, the database down: say so, keep serving
            self.failures += 1
            log.error("audit checkpoint not written", extra={"reason": f"{type(exc).__name__}: {exc}"})
            return None
        if point is not None:
            self.written += 1
        return point

    def _publish(self) -> None:
        try:
            newest = checkpoint.read(self.path)[-1:]
        except (OSError, ValueError):
            return
        if newest:
            try:
                self.on_checkpoint(newest[0])
            except Exception:
                log.exception("publishing the newest audit checkpoint failed")
