"""One measured cost per model version for all the workers of a server, kept in a small file each.

Each worker loads its own models, but a version's row limit has to be the same whichever worker
answers: a client that sized its requests from the metadata one worker gave must not be refused
by another that happened to measure slower. So the first worker to load a version measures it
under an exclusive ``fcntl`` lock on ``explain-cost-<model>-<version>-<digest>.json`` in the
metrics folder (emptied when the server starts, so a restart measures again); the others wait
for the lock, at most ``WAIT_SECONDS``, and read its figure. A worker that cannot use the file
(no folder, a full or read-only one, a lock held too long) measures for itself. No Flask.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from service.explain.cost import Cost

PREFIX = "explain-cost-"
FILE_MODE = 0o600
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.02
MAX_BYTES = 4096

log = logging.getLogger(__name__)


def path_for(folder: Path, name: str, version: int, digest: str) -> Path:
    """The file holding version ``version`` of model ``name`` (names are checked at load: safe in a path)."""
    return folder / f"{PREFIX}{name}-{version}-{digest[:16]}.json"


def shared(path: Path | None, measure: Callable[[], Cost | None], *,
           wait_seconds: float = WAIT_SECONDS) -> Cost | None:
    """Return the cost stored at ``path``, or ``measure()`` it and store it for the other workers."""
    if path is None:
        return measure()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        log.warning("explanation cost measured by this worker alone", extra={"path": str(path), "problem": exc.strerror})
        return measure()
    try:
        if not _lock(fd, wait_seconds):
            return measure()
        try:
            stored = _read(fd)
            if stored is not None:
                return stored
            cost = measure()
            if cost is not None:
                _write(fd, cost, path)
            return cost
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock(fd: int, wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:  # another worker is measuring (EAGAIN/EACCES)
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


def _read(fd: int) -> Cost | None:
    data = os.pread(fd, MAX_BYTES, 0)
    if not data:
        return None
    try:
        return Cost.from_dict(json.loads(data))
    except ValueError:  # a torn or foreign file: measured again and overwritten
        return None


def _write(fd: int, cost: Cost, path: Path) -> None:
    data = json.dumps(cost.to_dict()).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:  # the other workers measure for themselves
        log.warning("explanation cost not shared", extra={"path": str(path), "problem": exc.strerror})
