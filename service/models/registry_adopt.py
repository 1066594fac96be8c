"""Artifacts made with another audit trail: how to tell, and how this store adopts them.

Every history entry a tool writes names its audit record (``audit``: the record's hash). A
registry.json packaged on a build host, in CI or on a laptop names records of *that* host's
store; served with another ``DATABASE_URL`` those records are not in this chain. Such a file is
"not adopted": it is refused by every check alike (the workers' ``RegistryAnchors``, ``registry
check``, ``registry accept``, ``audit verify``) with the same words, until ``adopt`` verifies the
artifacts and records their arrival here. The adoption record (``registry.adopt``) lists the
foreign entries it vouches for (their audit hash and the digest of their content), the chain
head it adopted, who adopted them and from which artifact root and host; from then on those
entries verify as adopted, and the adoption's anchor covers the whole file as any change does.

This module decides what is foreign and writes the adoption; it neither serves nor refuses
anything itself. No Flask.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from service.models import artifacts, registry
from service.models.registry_file import UNVERIFIED, RegistryUnverified, audits_of  # noqa: F401  (this module's API too)

ADOPT = "registry.adopt"
CHUNK = 200  # hashes per IN (...) query: far below every backend's parameter limit
_KNOWN = "SELECT hash FROM audit WHERE target = ? AND hash IN ({})"
ADOPTIONS = "SELECT details FROM audit WHERE target = ? AND action = ? ORDER BY seq"


class RegistryNotAdopted(RegistryUnverified):
    """A registry.json whose history names audit records of another store, not adopted here."""

    def __init__(self, model: str, unknown: Iterable[str], *, last_good: bool = False):
        self.unknown = tuple(unknown)
        super().__init__(model, not_adopted(len(self.unknown)), code=UNVERIFIED, last_good=last_good)
        self.fix = adopt_fix(model)
        self.args = (f"model {model!r}: {self.reason}; {self.fix}",)


def not_adopted(count: int) -> str:
    """The one sentence every check says about a file made with another audit trail."""
    return (f"not adopted: registry.json names {count} audit record(s) of another store "
            "(artifacts packaged elsewhere)")


def is_not_adopted(reason: str | None) -> bool:
    """Whether a refusal's reason is the one ``not_adopted`` words."""
    return bool(reason) and reason.startswith("not adopted:")


def adopt_fix(model: str) -> str:
    return f"`python -m service registry adopt {model}` verifies the artifacts and adopts them"


def named_audits(history: Any) -> list[str]:
    """The audit hashes a history's entries name, in order."""
    if not isinstance(history, list):
        return []
    return [e["audit"] for e in history if isinstance(e, dict) and isinstance(e.get("audit"), str)]


def entry_digest(entry: dict[str, Any]) -> str:
    """The sha256 of a history entry's content (without its ``audit`` field), as an adoption lists it."""
    body = json.dumps({k: v for k, v in entry.items() if k != "audit"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _fetcher(db: Any) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    if hasattr(db, "transaction"):
        return db.fetch
    return lambda sql, params: db.execute(sql, params).fetchall()


def adopted(db: Any, name: str) -> dict[str, str]:
    """The foreign entries this store adopted for ``name``: audit hash -> entry digest."""
    found: dict[str, str] = {}
    for (details,) in _fetcher(db)(ADOPTIONS, (f"model:{name}", ADOPT)):
        for item in json.loads(details).get("entry", {}).get("adopted", []):
            found[item["audit"]] = item["sha256"]
    return found


def foreign(db: Any, name: str, audits: Iterable[str]) -> list[str]:
    """The hashes in ``audits`` that are neither records of ``name`` in this chain nor adopted (in order)."""
    wanted = list(dict.fromkeys(audits))
    if not wanted:
        return []
    fetch, known = _fetcher(db), set()
    for start in range(0, len(wanted), CHUNK):
        part = wanted[start:start + CHUNK]
        sql = _KNOWN.format(", ".join("?" * len(part)))
        known.update(row[0] for row in fetch(sql, (f"model:{name}", *part)))
    missing = [h for h in wanted if h not in known]
    if missing:
        taken = adopted(db, name)
        missing = [h for h in missing if h not in taken]
    return missing


def adopt(root: Path, name: str, *, actor: str, reason: str = "", keys: Any = None) -> dict[str, Any]:
    """Verify ``name``'s artifacts and record their registry.json, made with another audit trail, as
    adopted here; return the history entry. Needs the audit trail (``registry.AUDIT`` and ``VERIFY``).

    Each version must pass its sha256 check, and its signature when ``keys`` verify (trusted keys);
    one that does not refuses the adoption (``ArtifactError``). Refused (``ValueError``) when the
    file is not foreign: it matches the trail (nothing to adopt) or was edited here (accept/restore).
    """
    artifacts.check_model_name(name)
    verifier, hook = registry.VERIFY.get(), registry.AUDIT.get()
    if verifier is None or hook is None:
        raise ValueError("adopting artifacts needs the audit trail (DATABASE_URL)")
    with registry.locked(root, name):
        state = registry.read_state(root, name)
        try:
            registry.read_state(root, name, verifier)
        except RegistryNotAdopted as exc:
            unknown = set(exc.unknown)
        except RegistryUnverified as exc:
            if exc.code != UNVERIFIED:
                raise
            raise ValueError(f"registry.json of {name!r} was edited, not made elsewhere: nothing to adopt "
                             f"(`registry accept {name}` or `registry restore {name}`)") from None
        else:
            raise ValueError(f"registry.json of {name!r} matches the audit trail; there is nothing to adopt")
        versions, checked = verify_versions(root, name, keys)
        history = state["history"]
        listed = [{"index": i, "audit": e["audit"], "sha256": entry_digest(e)}
                  for i, e in enumerate(history) if isinstance(e.get("audit"), str) and e["audit"] in unknown]
        entry = {"action": ADOPT, "from": {"root": registry.root_id(root), "host": socket.gethostname()},
                 "head": named_audits(history)[-1], "adopted": listed, "versions": versions, "checked": checked,
                 "labels": dict(state["labels"])}
        return registry.commit(root, name, state, entry, actor=actor, reason=reason)


def verify_versions(root: Path, name: str, keys: Any) -> tuple[list[dict[str, Any]], str]:
    """Check every version folder of ``name``; return what was checked (manifest digests) and how."""
    signed = keys is not None and getattr(keys, "verifies", False)
    versions = []
    for version in artifacts.list_versions(root, name):
        folder = artifacts.version_dir(root, name, version)
        # integrity and origin only: whether this scikit-learn can load it is the loader's question
        artifacts.verify_version(folder, expected_name=name, expected_version=version, signing_key=keys)
        manifest = (folder / artifacts.MANIFEST).read_bytes()
        versions.append({"version": version, "manifest_sha256": hashlib.sha256(manifest).hexdigest()})
    how = "signatures (trusted keys) and sha256" if signed else "sha256 only (no trusted keys configured)"
    return versions, how
