"""Anchors: which registry.json content the audit trail vouches for, per model.

Every audited registry change records the digest of the file it is about to write
(``details.registry``: root and sha256); the newest such record for a model is that file's
anchor. The root is recorded for the reader but not matched: one database serves one
deployment, and its replicas and the operator's command line may mount the artifacts at
different paths (a container's ``/app/artifacts``, the host's ``/srv/...``).
``RegistryAnchors.verify`` compares a file's digest with the anchor. A file with no anchor yet
(a fresh install, or a database from before anchors) is anchored as it is, once
(``registry.anchored``); a mismatch is refused and recorded once (``registry.refused``), not
once per poll per worker.

When the store does not answer, nothing can be checked. Changes are refused (fail closed). A
worker keeps serving the state it verified last (a file it has verified is answered from
memory, with no query). A worker that has verified nothing yet (booted during the outage)
serves registry.json unchecked, says so (``registry_unchecked`` on /readyz, a log line), and
checks it as soon as the store answers: serving goes on through a database outage, as it
does for predictions, at the price of trusting the file for that window.

The store is asked only when the file read differs from the one verified last (its inode,
ctime and size: a reload), never per prediction. This module checks and records; what a
refusal means for serving is ``registry_file``'s and the catalog's. No Flask.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import RegistryUnreadable
from service.models import artifacts, registry, registry_adopt, registry_file
from service.models.registry_file import UNCHECKED, UNVERIFIED, RegistryUnverified
from service.security import audit

log = logging.getLogger(__name__)

ANCHORED, REFUSED = "registry.anchored", "registry.refused"
PAGE = 100
# how an anchor's details read as stored (audit writes them with sorted keys and default separators)
ANCHOR_LIKE = '%"registry": {"root": %'
MISMATCH = "registry.json does not match the audit trail (it was changed outside the server's tools)"
CANNOT_CHECK = "registry.json cannot be checked against the audit trail (the database does not answer)"
_SELECT = f"SELECT {', '.join(audit.COLUMNS)} FROM audit WHERE target = ? AND details LIKE ?"  # noqa: S608  # nosec B608  # constants and "?" only
ANCHOR_PAGE = f"{_SELECT} ORDER BY seq DESC LIMIT {PAGE}"
ANCHOR_PAGE_BEFORE = f"{_SELECT} AND seq < ? ORDER BY seq DESC LIMIT {PAGE}"
REFUSALS = "SELECT details FROM audit WHERE target = ? AND action = ? AND seq > ? ORDER BY seq DESC LIMIT 100"


def root_id(root: Path) -> str:
    """The artifact root as anchors name it (``registry.root_id``)."""
    return str(Path(root).resolve())


def anchor_of(db: Any, root: str, name: str) -> audit.AuditRecord | None:
    """Return the newest record that anchors ``name`` (in a store, or a transaction's db); ``root`` is not matched."""
    fetch = db.fetch if hasattr(db, "transaction") else (lambda sql, params: db.execute(sql, params).fetchall())
    after = None
    while True:
        page = ANCHOR_PAGE if after is None else ANCHOR_PAGE_BEFORE
        params = (audit.REGISTRY_TARGET + name, ANCHOR_LIKE) + ((after,) if after is not None else ())
        rows = fetch(page, params)
        for row in rows:
            record = dict(zip(audit.COLUMNS, row, strict=True))
            details = json.loads(record["details"])
            anchor = details.get("registry")
            if isinstance(anchor, dict) and anchor.get("sha256"):
                return audit.AuditRecord(**{**record, "seq": int(record["seq"]), "details": details})
        if len(rows) < PAGE:
            return None
        after = rows[-1][0]


def anchored_digest(record: audit.AuditRecord | None) -> str | None:
    return record.details["registry"]["sha256"] if record is not None else None


class RegistryAnchors:
    """A ``registry_file.Verifier`` over the audit trail in ``store`` (a store, or a function opening one)."""

    def __init__(self, store: Any, actor: str | None = None):
        self._store = store
        self.actor = actor or f"server:{socket.gethostname()}:{os.getpid()}"
        self._verified: dict[tuple[str, str], tuple[str | None, Any]] = {}  # (root, model) -> (digest, stamp)
        self._verified_copy: dict[tuple[str, str], tuple[str | None, Any]] = {}  # the same for the last-good copy
        self._refused: dict[tuple[str, str], tuple[tuple[str | None, Any], tuple[str, ...]]] = {}
        self._unanswered: set[tuple[str, str]] = set()

    @property
    def store(self) -> Any:
        return self._store() if callable(self._store) and not hasattr(self._store, "transaction") else self._store

    def verify(self, root: Path, name: str, digest: str | None, *, stamp: Any = None, copy: bool = False,
               final: bool = False, audits: tuple[str, ...] = ()) -> None:
        """Return when ``digest`` is the anchored content and every record ``audits`` names is this
        trail's or adopted; raise ``RegistryUnverified`` (``RegistryNotAdopted``) otherwise."""
        key = (root_id(root), name)
        seen = (digest, stamp)
        verified = self._verified_copy if copy else self._verified
        if not final and stamp is not None:
            if verified.get(key) == seen:  # the very file verified before: no query
                return
            refused = self._refused.get(key)
            if not copy and refused is not None and refused[0] == seen:
                raise _refusal(name, refused[1])
        try:
            unknown = registry_adopt.foreign(self.store, name, audits)
            # a change (final) needs no anchor of its own: the record it writes anchors the new file;
            # a file made with another trail is never anchored as it is: it must be adopted
            anchor = self._anchor(key, digest, create=not final and not unknown)
        except Exception as exc:  # the store is down or locked: nothing can be checked
            if key not in self._unanswered:  # once per outage, not once per poll
                self._unanswered.add(key)
                log.error("registry.json cannot be checked: the audit trail does not answer",
                          extra={"model": name, "reason": f"{type(exc).__name__}: {exc}"})
            raise RegistryUnverified(name, CANNOT_CHECK, code=UNCHECKED) from None
        self._unanswered.discard(key)
        if anchor == digest and not unknown:
            verified[key] = seen
            if not copy:
                self._refused.pop(key, None)
            return
        refusal = _refusal(name, unknown)
        if final and not copy:
            self._refused[key] = (seen, tuple(unknown))
            self._record_refusal(key, digest, anchor, refusal)
        raise refusal

    def _anchor(self, key: tuple[str, str], digest: str | None, *, create: bool) -> str | None:
        """The anchored digest; a file with no anchor yet is anchored as it is (by one process only)."""
        root, name = key
        found = anchored_digest(anchor_of(self.store, root, name))
        if found is not None or digest is None:
            return found
        if not create:
            return digest
        written = audit.record_unless(
            self.store, lambda db: anchor_of(db, root, name) is not None,
            (self.actor, ANCHORED, audit.REGISTRY_TARGET + name, {"registry": {"root": root, "sha256": digest}}))
        if written is not None:
            log.warning("registry.json anchored in the audit trail as it is (no anchor before)",
                        extra={"model": name, "audit_seq": written.seq})
            return digest
        return anchored_digest(anchor_of(self.store, root, name))  # another process anchored it first

    def _record_refusal(self, key: tuple[str, str], digest: str | None, anchor: str | None,
                        refusal: RegistryUnverified) -> None:
        root, name = key
        details = {"refused": {"root": root, "sha256": digest, "expected": anchor, "reason": refusal.reason}}

        def already(db: Any) -> bool:
            last = _last_refusal(db, root, name)
            return last is not None and last.get("sha256") == digest and last.get("expected") == anchor

        try:
            written = audit.record_unless(self.store, already, (self.actor, REFUSED, audit.REGISTRY_TARGET + name,
                                                                details))
        except Exception as exc:  # the refusal stands; only its record is lost, and said so
            log.error("audit record could not be written", extra={"action": REFUSED, "model": name,
                                                                   "reason": f"{type(exc).__name__}: {exc}"})
            return
        if written is not None:
            log.error("registry.json refused: it does not match the audit trail",
                      extra={"model": name, "audit_seq": written.seq, "reason": refusal.reason, "fix": refusal.fix})


def _refusal(name: str, unknown: Any) -> RegistryUnverified:
    """The refusal of a file whose history names records ``unknown`` here (if any), or whose digest differs."""
    if unknown:
        return registry_adopt.RegistryNotAdopted(name, unknown)
    return RegistryUnverified(name, MISMATCH, code=UNVERIFIED)


def _last_refusal(db: Any, root: str, name: str) -> dict[str, Any] | None:
    """The newest refusal for ``name`` since its anchor, if any."""
    anchor = anchor_of(db, root, name)
    rows = db.execute(REFUSALS, (audit.REGISTRY_TARGET + name, REFUSED, anchor.seq if anchor else 0)).fetchall()
    for (details,) in rows:
        refused = json.loads(details).get("refused")
        if refused:
            return refused
    return None


@dataclass(frozen=True)
class Verdict:
    """What every check says about one registry.json: whether it is the audited one, why, and the fix."""

    ok: bool
    said: str
    fix: str = ""


def verdict(store: Any, root: Path, name: str) -> Verdict:
    """For ``registry check`` and ``audit verify``: the workers' verdict on ``name``'s registry.json.

    No anchor yet is fine unless the history names another store's records (the server anchors
    the file on its next read). Raises when the store cannot be read.
    """
    try:
        raw = (Path(root) / name / registry_file.REGISTRY_FILE).read_bytes()
    except FileNotFoundError:
        raw = None
    unknown = registry_adopt.foreign(store, name, registry_file.audits_of(raw))
    if unknown:
        return Verdict(False, registry_adopt.not_adopted(len(unknown)), registry_adopt.adopt_fix(name))
    record = anchor_of(store, root_id(root), name)
    if record is None:
        return Verdict(True, "not anchored yet (a server anchors it as it is on its next read)")
    if anchored_digest(record) != registry_file.state_digest(raw):
        return Verdict(False, f"{MISMATCH}; audit record {record.seq} ({record.action}) anchors another content",
                       f"`python -m service registry restore {name}` undoes the edit (from the last-good copy), "
                       f"`python -m service registry accept {name} --reason ...` keeps it")
    return Verdict(True, f"matches the audit trail (record {record.seq}, {record.action})")


def compare(store: Any, root: Path, name: str) -> tuple[bool, str]:
    """``verdict`` as (ok, what to say)."""
    found = verdict(store, root, name)
    return found.ok, found.said


# -- registry changes in the audit trail -------------------------------------------------------

def registry_hook(store: Any) -> Callable[..., str | None]:
    """A ``registry.AUDIT`` hook: record the change, the labels and rollout it leaves and the anchor
    of the file it writes (``registry``: root and digest); return the record's hash.

    ``store`` is a store or a function that opens one (the CLI opens it on the first change).
    Raises when the store cannot take the record, and the change is then not made: a file
    written without its anchor would be refused by every server (``registry_anchor``).
    """

    def hook(name: str, entry: dict[str, Any], state: dict[str, Any], *,
             registry: dict[str, Any] | None = None) -> str | None:
        details = {"entry": entry, "labels": state["labels"], "rollout": state["rollout"]}
        if registry is not None:
            details["registry"] = registry
        return audit.record(_opened(store), entry["actor"], entry["action"], audit.REGISTRY_TARGET + name, details).hash

    return hook


def _opened(store: Any) -> Any:
    return store if hasattr(store, "transaction") or not callable(store) else store()


@contextmanager
def registry_changes(store: Any) -> Iterator[None]:
    """Record every registry change made inside the block (in this thread or task) in the audit trail,
    and refuse changes over a registry.json that does not match it. ``store``: a store, or a
    function that opens one."""
    token = registry.AUDIT.set(registry_hook(store))
    check = registry.VERIFY.set(RegistryAnchors(store))
    try:
        yield
    finally:
        registry.VERIFY.reset(check)
        registry.AUDIT.reset(token)


def check_registry(store: Any, root: Path) -> list[str]:
    """Compare each model's registry.json with the chain; return what disagrees (empty: all agree).

    A history naming another store's records that were not adopted is one problem (``verdict``).
    Every history entry that names an audit record must match it (or the entry adopted); every
    audited change since the last restore, accept or adoption must be in the history; the labels and rollout must be those the
    last audited change left (a label moved by editing the file shows here); and the file must
    be the content its newest anchor names (any edit, history included, shows here).
    """
    chain: dict[str, list[audit.AuditRecord]] = {}
    for entry in audit.find(store, ""):
        if entry.target.startswith(audit.REGISTRY_TARGET) and {"entry", "labels", "rollout"} <= set(entry.details):
            chain.setdefault(entry.target[len(audit.REGISTRY_TARGET):], []).append(entry)
    problems = []
    for name in sorted(set(artifacts.list_models(root)) | set(chain)):
        try:
            state = registry.read_state(root, name)
        except (RegistryUnreadable, ValueError) as exc:
            problems.append(f"{name}: registry.json cannot be read: {getattr(exc, 'reason', exc)}")
            continue
        said = verdict(store, root, name)
        if not said.ok and said.said.startswith("not adopted"):  # one line, not one per foreign entry
            problems.append(f"{name}: refused: {said.said}; {said.fix}")
            continue
        adopted = registry_adopt.adopted(store, name)
        found = [f"{name}: {p}" for p in _registry_problems(state, chain.get(name, []), adopted)]
        if not said.ok and not found:  # an edit the checks above miss (a history entry, say)
            found.append(f"{name}: {said.said}")
        problems += found
    return problems


def _registry_problems(state: dict[str, Any], chain: list[audit.AuditRecord], adopted: dict[str, str]) -> list[str]:
    problems, by_hash, seen = [], {r.hash: r for r in chain}, set()
    for index, entry in enumerate(state["history"]):
        digest = entry.get("audit")
        if digest is None:
            continue
        found = by_hash.get(digest)
        if found is None and digest in adopted:  # another store's record, vouched for by an adoption
            if registry_adopt.entry_digest(entry) != adopted[digest]:
                problems.append(f"history entry {index} ({entry.get('action')}) differs from the entry adopted")
        elif found is None:
            problems.append(f"history entry {index} ({entry.get('action')}) names an audit record not in the chain")
        elif {k: v for k, v in entry.items() if k != "audit"} != found.details["entry"]:
            problems.append(f"history entry {index} ({entry.get('action')}) differs from audit record {found.seq}")
        seen.add(digest)
    restores = [i for i, r in enumerate(chain) if r.action in ("registry.restore", "registry.accept", registry_adopt.ADOPT)]
    # a restore brings back an older history, an accept an edited one, an adoption another store's
    since = chain[restores[-1]:] if restores else chain
    for missing in (r for r in since if r.hash not in seen):
        problems.append(f"audit record {missing.seq} ({missing.action}) is missing from the history")
    if chain and (state["labels"] != chain[-1].details["labels"] or state["rollout"] != chain[-1].details["rollout"]):
        problems.append(f"labels or rollout differ from those audit record {chain[-1].seq} left "
                        "(changed without an audited change)")
    return problems
