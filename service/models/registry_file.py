"""``registry.json`` on disk: read and check it, write it, and keep its last-good copy.

Beside ``<root>/<model>/registry.json`` lies ``.registry.last-good.json``: the last state that
was written and read back as a registry state. Changes (``write_state``, under ``locked``)
refresh both; readers that serve (``read_serving_state``) fall back to the copy when
registry.json is unreadable, so a corrupt file never takes a model away from a worker that
boots after it broke. With a ``Verifier`` (the audit trail's anchors, ``service.security.
registry_anchor``), a registry.json whose content is not the one the last audited change wrote
is refused like an unreadable one, and the copy is used only when it is that content; the copy
is refreshed only from a file that passed the check. Nothing here decides what a change means
(that is ``registry``'s job), and no message names the server's absolute path. No Flask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from service.errors import RegistryUnreadable
from service.models import artifacts
from service.models.rollout import DEFAULT_RULES, default_rollout

REGISTRY_FILE = artifacts.REGISTRY_FILE
LOCK_FILE = ".registry.lock"
LAST_GOOD_FILE = ".registry.last-good.json"
BROKEN_PREFIX = ".registry.broken-"  # an unreadable registry.json kept aside by a restore, for the post-mortem

# why a registry state was not used, as /readyz reports it
UNREADABLE, UNVERIFIED, UNCHECKED = "registry_unreadable", "registry_unverified", "registry_unchecked"

log = logging.getLogger(__name__)


class RegistryUnverified(RegistryUnreadable):
    """A registry.json that reads but is not what the last audited change wrote (``UNVERIFIED``), or
    that cannot be checked now because the audit trail's store does not answer (``UNCHECKED``)."""

    def __init__(self, model: str, reason: str, *, code: str = UNVERIFIED, last_good: bool = False):
        super().__init__(model, reason, last_good=last_good)
        self.code = code
        if code == UNVERIFIED:
            fix = (f"if the edit was intended, record it with `python -m service registry accept {model} "
                   f"--reason ...`; otherwise put back the audited state with `python -m service registry "
                   f"restore {model}`")
        else:
            fix = "it is checked again on the next read, and changes wait until the database answers"
        self.fix = fix
        self.args = (f"model {model!r}: {reason}; {fix}",)


class Verifier(Protocol):
    """Checks a registry content's digest (``state_digest``) against the audit trail."""

    def verify(self, root: Path, name: str, digest: str | None, *, stamp: Any = None, copy: bool = False,
               final: bool = False, audits: tuple[str, ...] = ()) -> None:
        """Return when ``digest`` is the content the trail anchors; raise ``RegistryUnverified`` otherwise.

        ``stamp`` identifies the file read (a repeated read of the same file may be answered from
        memory); ``copy`` says the digest is the last-good copy's; ``final`` asks for a fresh
        answer, and a mismatch it confirms is recorded. ``audits``: the audit records the file's
        history names (``audits_of``), which must be this trail's or adopted by it.
        """


#: Set by whoever changes the registry with the audit trail at hand (admin API, CLI, automatic
#: rollback): every change then first checks the file it changes against the trail.
VERIFY: ContextVar[Verifier | None] = ContextVar("registry_verify", default=None)


@dataclass(frozen=True)
class Reading:
    """The state a worker serves, and why registry.json itself was not used (``error``, ``code``)."""

    state: dict[str, Any]
    error: str | None = None
    code: str | None = None
    from_last_good: bool = False
    verified: bool = True  # False: served unchecked, the audit trail's database did not answer


def state_digest(raw: bytes | None) -> str | None:
    """The sha256 an audit record anchors for a registry.json content; None for no file.

    Taken over canonical JSON (sorted keys, no spaces), so formatting does not count, leaving
    out the newest history entry's ``audit`` field: it names the very record that holds this
    digest. Bytes that are not JSON hash as they are (they never match an anchor).
    """
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return hashlib.sha256(raw).hexdigest()
    history = data.get("history") if isinstance(data, dict) else None
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        newest = {k: v for k, v in history[-1].items() if k != "audit"}
        data = {**data, "history": [*history[:-1], newest]}
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()


def audits_of(raw: bytes | None) -> tuple[str, ...]:
    """The audit record hashes a registry.json content's history names, in order (none when not JSON)."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return ()
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        return ()
    return tuple(e["audit"] for e in history if isinstance(e, dict) and isinstance(e.get("audit"), str))


def digest_of_state(state: dict[str, Any]) -> str:
    """``state_digest`` of the file ``write_state`` would write for ``state``."""
    return state_digest(json.dumps(state, allow_nan=False).encode())  # type: ignore[return-value]


def empty_state() -> dict[str, Any]:
    return {"labels": {}, "rollout": default_rollout(), "production_stack": [], "history": []}


def locked(root: Path, name: str) -> contextlib.AbstractContextManager[None]:
    """Hold the model's registry lock for a read-modify-write."""
    return artifacts.exclusive_lock(artifacts.model_dir(root, name) / LOCK_FILE)


def read_state(root: Path, name: str, verifier: Verifier | None = None) -> dict[str, Any]:
    """Read a model's registry state; a missing file is an empty state.

    Raise ``RegistryUnreadable`` when the file cannot be read or is not a registry state, and
    when it is missing while a last-good copy exists (it was lost, not never written): a
    change made over it would silently drop the model's labels and history. With a
    ``verifier``, raise ``RegistryUnverified`` when the content is not the audited one.
    """
    return _read(root, name, verifier, final=True)[0]


def _read(root: Path, name: str, verifier: Verifier | None, *, final: bool) -> tuple[dict[str, Any], Any]:
    """Read and check registry.json once; return the state and the stamp of the file read."""
    folder = artifacts.model_dir(root, name)
    raw, stamp = None, None
    try:
        raw, stamp = _read_file(folder / REGISTRY_FILE)
        state = _parse(name, REGISTRY_FILE, raw)
    except FileNotFoundError:
        if (folder / LAST_GOOD_FILE).exists():
            raise RegistryUnreadable(name, f"{REGISTRY_FILE} is missing", last_good=True) from None
        state = empty_state()
    except OSError as exc:
        raise RegistryUnreadable(name, f"{REGISTRY_FILE} cannot be read: {exc.strerror}",
                                 last_good=(folder / LAST_GOOD_FILE).exists()) from None
    except RegistryUnreadable as exc:
        raise RegistryUnreadable(name, exc.reason, last_good=(folder / LAST_GOOD_FILE).exists()) from None
    if verifier is not None:
        _check(verifier, root, name, raw, stamp, final=final)
    return state, stamp


def _read_file(path: Path) -> tuple[bytes, tuple[int, int, int]]:
    # the stamp (inode, ctime, size) changes with every rename or write, and ctime cannot be set back
    with open(path, "rb") as fh:
        info = os.fstat(fh.fileno())
        return fh.read(), (info.st_ino, info.st_ctime_ns, info.st_size)


def _check(verifier: Verifier, root: Path, name: str, raw: bytes | None, stamp: Any, *, copy: bool = False,
           final: bool = False) -> None:
    try:
        verifier.verify(root, name, state_digest(raw), stamp=stamp, copy=copy, final=final, audits=audits_of(raw))
    except RegistryUnverified as exc:
        last_good = (artifacts.model_dir(root, name) / LAST_GOOD_FILE).exists()
        if type(exc) is not RegistryUnverified:  # a kind with its own fix (not adopted) keeps it
            exc.last_good = last_good
            raise exc from None
        raise RegistryUnverified(name, exc.reason, code=exc.code, last_good=last_good) from None


def read_last_good(root: Path, name: str) -> dict[str, Any]:
    """Read the last-good copy; raise ``RegistryUnreadable`` when there is none or it is not a state."""
    try:
        raw = (artifacts.model_dir(root, name) / LAST_GOOD_FILE).read_bytes()
    except OSError as exc:
        raise RegistryUnreadable(name, f"there is no readable last-good copy ({exc.strerror})") from None
    return _parse(name, LAST_GOOD_FILE, raw)


def read_serving_state(root: Path, name: str) -> tuple[dict[str, Any], str | None]:
    """Return the state to serve and, when registry.json could not be used, why (no audit check)."""
    reading = read_checked_state(root, name, None)
    return reading.state, reading.error


def read_checked_state(root: Path, name: str, verifier: Verifier | None, *,
                       unchecked_ok: bool = False) -> Reading:
    """Return the state to serve and, when registry.json could not be used, why.

    An unreadable registry.json, or one the ``verifier`` refuses, falls back to the last-good
    copy when that copy passes the same check; with no usable copy, the error about
    registry.json is raised. A mismatch is confirmed under the registry lock before it counts:
    a change records its audit anchor before it renames the new file into place, so a reader
    between the two sees the new anchor with the old file. When the verifier cannot answer
    (``UNCHECKED``), ``unchecked_ok`` serves the file as it reads, marked unverified (a worker
    that verified nothing yet); otherwise that is raised too. A good registry.json newer than
    its copy (written before copies existed, or whose copy failed to write) refreshes the copy.
    """
    try:
        try:
            state, _ = _read(root, name, verifier, final=False)
        except RegistryUnverified as exc:
            if exc.code != UNVERIFIED:
                raise
            with _lock_if_writable(root, name):
                state, _ = _read(root, name, verifier, final=True)
    except RegistryUnverified as exc:
        if exc.code == UNCHECKED and unchecked_ok:
            return _unchecked(root, name, exc)
        return _from_last_good(root, name, verifier, exc, unchecked_ok)
    except RegistryUnreadable as exc:
        return _from_last_good(root, name, verifier, exc, unchecked_ok)
    _refresh_last_good(root, name)
    return Reading(state)


def _unchecked(root: Path, name: str, exc: RegistryUnverified) -> Reading:
    try:
        return Reading(read_state(root, name), exc.reason, UNCHECKED, verified=False)
    except RegistryUnreadable as unreadable:
        return _from_last_good(root, name, None, unreadable, True, verified=False)


def _from_last_good(root: Path, name: str, verifier: Verifier | None, exc: RegistryUnreadable,
                    unchecked_ok: bool = False, *, verified: bool = True) -> Reading:
    try:
        raw, stamp = _read_file(artifacts.model_dir(root, name) / LAST_GOOD_FILE)
        state = _parse(name, LAST_GOOD_FILE, raw)
        if verifier is not None:
            _check(verifier, root, name, raw, stamp, copy=True)
    except RegistryUnverified as copy_exc:
        if copy_exc.code == UNCHECKED and unchecked_ok:
            return Reading(state, exc.reason, getattr(exc, "code", UNREADABLE), from_last_good=True, verified=False)
        raise exc from None
    except (OSError, RegistryUnreadable):
        raise exc from None
    return Reading(state, exc.reason, getattr(exc, "code", UNREADABLE), from_last_good=True, verified=verified)


def check_last_good(root: Path, name: str, verifier: Verifier) -> None:
    """Raise ``RegistryUnverified`` unless the last-good copy is the content the audit trail anchors."""
    raw, stamp = _read_file(artifacts.model_dir(root, name) / LAST_GOOD_FILE)
    try:
        verifier.verify(root, name, state_digest(raw), stamp=stamp, copy=True, final=True, audits=audits_of(raw))
    except RegistryUnverified as exc:
        if exc.code != UNVERIFIED or type(exc) is not RegistryUnverified:
            raise
        raise RegistryUnverified(name, "the last-good copy does not match the audit trail either: inspect "
                                 "both files, then `registry accept` the right one") from None


def _lock_if_writable(root: Path, name: str) -> contextlib.AbstractContextManager[None]:
    folder = artifacts.model_dir(root, name)
    # a read-only install has no writer here to wait for
    return locked(root, name) if os.access(folder, os.W_OK) else contextlib.nullcontext()


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
