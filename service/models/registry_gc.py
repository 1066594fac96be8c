"""Deleting a model's old version folders: which versions are protected, and removing the rest safely.

A version stays while anything points at it (a label, the rollout, the rollback target) or it
is among the newest ``keep``. The doomed folders are renamed aside (``.gc-*``) before the
registry records the deletion, so a failed write puts them back; only then are they removed,
without ever following a symlink planted inside. Recording the change (history, audit,
registry.json) is the caller's: ``service.models.registry.gc`` passes it in, so this module
never writes registry.json itself. No Flask.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.models import artifacts
from service.models.registry_file import VERIFY, locked, read_state

GC_PREFIX = ".gc-"

#: Writes the gc's history entry into the state it was given, under the lock ``collect`` holds.
Record = Callable[[dict[str, Any], dict[str, Any]], object]


def protected_versions(state: dict[str, Any]) -> set[int]:
    """Return the versions ``gc`` must keep: labelled, in the rollout, or the rollback target."""
    rollout = state["rollout"]
    keep = set(state["labels"].values()) | set(rollout["shadow"])
    if rollout["canary"]:
        keep.add(rollout["canary"]["version"])
    if rollout["fallback"] is not None:
        keep.add(rollout["fallback"])
    if state["production_stack"]:
        keep.add(state["production_stack"][-1])
    return keep


def collect(root: Path, name: str, *, keep: int, record: Record, dry_run: bool = False) -> list[int]:
    """Delete the version folders older than the newest ``keep`` that nothing points at; return them.

    ``record(state, entry)`` writes the change; when it raises, the folders are put back.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        # the newest version always stays: packaging numbers the next one after it
        raise ValueError("keep must be an integer of at least 1")
    folder = artifacts.model_dir(root, name)
    if not folder.is_dir():
        raise ValueError(f"there is no model {name!r} under {root}")
    with locked(root, name):
        state = read_state(root, name, VERIFY.get())  # a refused registry.json is not gc'd over
        protected = protected_versions(state)
        doomed = [v for v in artifacts.list_versions(root, name)[:-keep] if v not in protected]
        if dry_run or not doomed:
            return doomed
        for stale in folder.glob(GC_PREFIX + "*"):  # left by a gc that died half-way
            _remove_tree(stale)
        # move the folders out of sight first (one rename each), so a failed write can put them back
        moved: list[tuple[int, Path]] = []
        try:
            for version in doomed:
                trash = Path(tempfile.mkdtemp(dir=folder, prefix=f"{GC_PREFIX}{version}-"))
                os.rename(folder / str(version), trash / str(version))
                moved.append((version, trash))
            state["production_stack"] = [v for v in state["production_stack"] if v not in doomed]
            record(state, {"action": "gc", "keep": keep, "deleted": doomed})
        except BaseException:
            for version, trash in moved:
                os.rename(trash / str(version), folder / str(version))
                trash.rmdir()
            raise
        for _, trash in moved:
            _remove_tree(trash)
        return doomed


def _remove_tree(path: Path) -> None:
    """Delete ``path`` without ever following a symlink: a planted link is removed, never its target."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    # versions are written read-only (0444); make them writable so removal works everywhere.
    # os.walk does not descend into linked folders, and the chmod below refuses links.
    for folder, _, files in os.walk(path):
        _chmod_no_follow(folder, 0o755)  # nosec B103  # a folder about to be removed: its owner needs write and search
        for filename in files:
            _chmod_no_follow(os.path.join(folder, filename), 0o644)
    shutil.rmtree(path)  # unlinks links inside, never follows them


def _chmod_no_follow(path: str, mode: int) -> None:
    # O_NOFOLLOW: a link swapped in after the walk looked is refused (ELOOP), not followed;
    # O_NONBLOCK: a planted FIFO cannot hang the gc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT):
            return
        raise
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
