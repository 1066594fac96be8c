"""``registry.json`` on disk: read and check it, write it, and keep its last-good copy.

Beside ``<root>/<model>/registry.json`` lies ``.registry.last-good.json``: the last state that
was written and read back as a registry state. Changes (``write_state``, under ``locked``)
refresh both; readers that serve (``read_serving_state``) fall back to the copy when
registry.json is unreadable, so a corrupt file never takes a model away from a worker that
boots after it broke. Nothing here decides what a change means (that is ``registry``'s job),
and no message names the server's absolute path. No Flask.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.errors import RegistryUnreadable
from service.models import artifacts
from service.models.rollout import DEFAULT_RULES, default_rollout

REGISTRY_FILE = artifacts.REGISTRY_FILE
LOCK_FILE = ".registry.lock"
LAST_GOOD_FILE = ".registry.last-good.json"
BROKEN_PREFIX = ".registry.broken-"  # an unreadable registry.json kept aside by a restore, for the post-mortem

log = logging.getLogger(__name__)


def empty_state() -> dict[str, Any]:
    return {"labels": {}, "rollout": default_rollout(), "production_stack": [], "history": []}


def locked(root: Path, name: str) -> contextlib.AbstractContextManager[None]:
    """Hold the model's registry lock for a read-modify-write."""
    return artifacts.exclusive_lock(artifacts.model_dir(root, name) / LOCK_FILE)


def read_state(root: Path, name: str) -> dict[str, Any]:
    """Read a model's registry state; a missing file is an empty state.

    Raise ``RegistryUnreadable`` when the file cannot be read or is not a registry state, and
    when it is missing while a last-good copy exists (it was lost, not never written): a
    change made over it would silently drop the model's labels and history.
    """
    folder = artifacts.model_dir(root, name)
    try:
        return _parse(name, REGISTRY_FILE, (folder / REGISTRY_FILE).read_bytes())
    except FileNotFoundError:
        if (folder / LAST_GOOD_FILE).exists():
            raise RegistryUnreadable(name, f"{REGISTRY_FILE} is missing", last_good=True) from None
        return empty_state()
    except OSError as exc:
        raise RegistryUnreadable(name, f"{REGISTRY_FILE} cannot be read: {exc.strerror}",
                                 last_good=(folder / LAST_GOOD_FILE).exists()) from None
    except RegistryUnreadable as exc:
        raise RegistryUnreadable(name, exc.reason, last_good=(folder / LAST_GOOD_FILE).exists()) from None


def read_last_good(root: Path, name: str) -> dict[str, Any]:
    """Read the last-good copy; raise ``RegistryUnreadable`` when there is none or it is not a state."""
    try:
        raw = (artifacts.model_dir(root, name) / LAST_GOOD_FILE).read_bytes()
    except OSError as exc:
        raise RegistryUnreadable(name, f"there is no readable last-good copy ({exc.strerror})") from None
    return _parse(name, LAST_GOOD_FILE, raw)


def read_serving_state(root: Path, name: str) -> tuple[dict[str, Any], str | None]:
    """Return the state to serve and, when registry.json could not be used, why.

    An unreadable registry.json falls back to the last-good copy; with no usable copy either,
    the ``RegistryUnreadable`` of registry.json is raised. A good registry.json newer than its
    copy (written before copies existed, edited by hand, or whose copy failed to write)
    refreshes the copy.
    """
    try:
        state = read_state(root, name)
    except RegistryUnreadable as exc:
        try:
            return read_last_good(root, name), exc.reason
        except RegistryUnreadable:
            raise exc from None
    _refresh_last_good(root, name)
    return state, None


def write_state(root: Path, name: str, state: dict[str, Any]) -> None:
    """Write registry.json atomically, then its last-good copy from what reads back (hold ``locked``)."""
    folder = artifacts.model_dir(root, name)
    artifacts.write_json_atomic(folder / REGISTRY_FILE, state)
    try:
        _copy_to_last_good(name, folder)
    except (OSError, RegistryUnreadable) as exc:
        # the change is made; a stale copy is refreshed by the next serving read
        log.warning("could not write the registry's last-good copy", extra={"model": name, "reason": str(exc)})


def keep_broken(root: Path, name: str) -> str | None:
    """Copy an unreadable registry.json aside before it is replaced; return the copy's file name."""
    folder = artifacts.model_dir(root, name)
    if not (folder / REGISTRY_FILE).exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    kept = f"{BROKEN_PREFIX}{stamp}.json"
    shutil.copyfile(folder / REGISTRY_FILE, folder / kept)
    return kept


def _parse(name: str, filename: str, raw: bytes) -> dict[str, Any]:
    """Check ``raw`` is a registry state and fill in fields older files lack; raise ``RegistryUnreadable``."""
    try:
        state = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise RegistryUnreadable(name, f"{filename} is not valid JSON: {exc}") from None
    if not _is_state(state):
        raise RegistryUnreadable(name, f"{filename} is not a registry state (an object with labels and history)")
    # files written before rollout existed read as "no rollout", field by field
    rollout = {**default_rollout(), **state.get("rollout", {})}
    rollout["rules"] = {**DEFAULT_RULES, **rollout["rules"]}
    state = {"labels": {}, "rollout": None, "production_stack": [], **state}
    state["rollout"] = rollout
    state["history"] = state.pop("history", [])  # last, so the file reads top-down
    return state


def _is_state(state: Any) -> bool:
    if not isinstance(state, dict):
        return False
    labels, stack, rollout = state.get("labels", {}), state.get("production_stack", []), state.get("rollout", {})
    history = state.get("history", [])
    return (isinstance(labels, dict) and all(_is_version(v) for v in labels.values())
            and isinstance(stack, list) and all(_is_version(v) for v in stack)
            and isinstance(history, list) and all(isinstance(entry, dict) for entry in history)
            and isinstance(rollout, dict) and isinstance(rollout.get("rules", {}), dict))


def _is_version(value: Any) -> bool:
    return type(value) is int and value > 0


def _copy_to_last_good(name: str, folder: Path) -> None:
    # the copy is what registry.json holds now, checked the way every reader checks it
    raw = (folder / REGISTRY_FILE).read_bytes()
    _parse(name, REGISTRY_FILE, raw)
    artifacts.write_json_atomic(folder / LAST_GOOD_FILE, json.loads(raw))


def _refresh_last_good(root: Path, name: str) -> None:
    folder = artifacts.model_dir(root, name)
    if not _copy_is_stale(folder) or not os.access(folder, os.W_OK):
        return  # a read-only install keeps serving; it just has no copy to fall back to
    try:
        with locked(root, name):
            if _copy_is_stale(folder):  # another worker may have refreshed it while we waited
                _copy_to_last_good(name, folder)
    except (OSError, RegistryUnreadable) as exc:
        log.warning("could not refresh the registry's last-good copy", extra={"model": name, "reason": str(exc)})


def _copy_is_stale(folder: Path) -> bool:
    try:
        written = (folder / REGISTRY_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        return (folder / LAST_GOOD_FILE).stat().st_mtime_ns < written
    except FileNotFoundError:
        return True
