"""The registry's mutable state on disk: labels, rollout, production stack and history per model.

``<root>/<model>/registry.json`` is changed only through ``update``: under an exclusive file
lock (so two processes changing it at once lose nothing), written to a temp file and renamed
(so readers never see half a file), with every change appended to ``history`` and a checked
last-good copy written beside it (``registry_file``). Refused changes raise before anything is
written; so does every change over a registry.json that cannot be read, which only
``restore`` (from the last-good copy) or a repair by hand replaces. With the audit trail at
hand (``AUDIT`` and ``VERIFY``, set by the admin API, the CLI and the rollout guard), each change
is recorded with the digest of the file it writes, before writing it: that record is the
file's anchor, and a file that does not match its anchor is refused until ``restore`` or
``accept`` resolves it. Which version answers a
request is ``rollout``'s job, and deleting old version folders ``registry_gc``'s (``gc`` here
only records it), not this module's. No Flask.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.errors import ArtifactError, RegistryUnreadable
from service.models import artifacts, compatibility, registry_file, registry_gc
from service.models.registry_file import (  # noqa: F401  (read_serving_state, LAST_GOOD_FILE, ...: this module's API too)
    LAST_GOOD_FILE,
    UNCHECKED,
    UNREADABLE,
    UNVERIFIED,
    VERIFY,
    RegistryUnverified,
    Verifier,
    digest_of_state,
    empty_state,
    keep_broken,
    locked,
    read_checked_state,
    read_last_good,
    read_serving_state,
    read_state,
    write_state,
)
from service.models.registry_gc import GC_PREFIX, protected_versions  # noqa: F401  (this module's API too)
from service.models.rollout import (
    PRODUCTION,
    check_budget,
    check_canary,
    check_fallback,
    check_rules,
    check_shadow,
)

LABEL_RE = re.compile(r"[a-z0-9_-]{1,64}")
STACK_LIMIT = 20  # rollback targets remembered; older ones are dropped from the bottom


class _Unset:
    """The default of ``set_rollout``'s arguments: keep that part of the rollout as it is."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

#: Who changes the registry on someone's behalf (admin API, CLI, automatic rollback) sets this to
#: a function that records the change (model, history entry, new state and, as ``registry``, the
#: artifact root and the digest of the file about to be written) in the audit trail and returns
#: the record's hash, which the history entry then carries: ``audit verify`` compares them. It
#: raises when the record cannot be written, and then nothing is written: an unanchored file
#: would be refused by every server.
AuditHook = Callable[..., "str | None"]
AUDIT: ContextVar[AuditHook | None] = ContextVar("registry_audit", default=None)


def check_label(label: str) -> str:
    """Return ``label`` when it is a legal label name, else raise ``ValueError``."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise ValueError("labels match [a-z0-9_-]{1,64}")
    return label


def update(root: Path, name: str, change: Callable[[dict[str, Any]], dict[str, Any]], *,
           actor: str, reason: str = "") -> dict[str, Any]:
    """Apply ``change`` to the state under the lock and record what it returned in the history.

    ``change`` mutates the state it is given and returns the history entry's details (at
    least ``action``); it raises to refuse the change, leaving the file untouched.
    """
    with locked(root, name):
        state = read_state(root, name, VERIFY.get())
        return commit(root, name, state, change(state), actor=actor, reason=reason)


def commit(root: Path, name: str, state: dict[str, Any], entry: dict[str, Any], *, actor: str,
            reason: str) -> dict[str, Any]:
    entry = {"at": _now(), "actor": actor, **entry, "reason": reason}
    state["history"].append(entry)
    audit = AUDIT.get()
    if audit is not None:
        # recorded before registry.json is written, under its lock: the chain orders changes as they
        # happened, and a reader never sees a new file before its anchor
        anchor = {"root": root_id(root), "sha256": digest_of_state(state)}
        digest = audit(name, entry, state, registry=anchor)
        if digest:
            entry["audit"] = digest
    write_state(root, name, state)
    return entry


def root_id(root: Path) -> str:
    """The artifact root as anchors name it: its absolute path (one database may serve several roots)."""
    return str(Path(root).resolve())


def restore(root: Path, name: str, *, actor: str, reason: str = "") -> dict[str, Any]:
    """Replace an unreadable or refused registry.json with its last-good copy, keeping the file aside.

    Refused (``ValueError``) when registry.json reads fine (and matches the audit trail, when
    ``VERIFY`` is set), so a restore never rolls back good changes; raise ``RegistryUnreadable``
    when there is no usable copy, and ``RegistryUnverified`` when the copy is not the audited
    state either (or the trail cannot be read).
    """
    artifacts.check_model_name(name)
    verifier = VERIFY.get()
    with locked(root, name):
        try:
            read_state(root, name, verifier)
        except RegistryUnverified as exc:
            if exc.code != UNVERIFIED:
                raise
        except RegistryUnreadable:
            pass
        else:
            audited = " (and matches the audit trail)" if verifier is not None else ""
            raise ValueError(f"registry.json of {name!r} is readable; there is nothing to restore{audited}")
        state = read_last_good(root, name)
        if verifier is not None:
            registry_file.check_last_good(root, name, verifier)
        entry = {"action": "registry.restore", "kept": keep_broken(root, name)}
        return commit(root, name, state, entry, actor=actor, reason=reason)


def accept(root: Path, name: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Record an edited registry.json as it is (an operator's deliberate edit): it becomes the anchor.

    Needs the audit trail (``AUDIT`` and ``VERIFY``) and a reason; refused (``ValueError``) when
    the file already matches the trail, and (``RegistryUnreadable``) when it cannot be read.
    """
    artifacts.check_model_name(name)
    verifier, audit = VERIFY.get(), AUDIT.get()
    if verifier is None or audit is None:
        raise ValueError("accepting registry.json needs the audit trail (DATABASE_URL)")
    if not reason.strip():
        raise ValueError("give the reason the file was edited (--reason)")
    with locked(root, name):
        state = read_state(root, name)
        try:
            read_state(root, name, verifier)
        except RegistryUnverified as exc:
            if exc.code != UNVERIFIED or type(exc) is not RegistryUnverified:  # made elsewhere: adopt, not accept
                raise
        else:
            raise ValueError(f"registry.json of {name!r} matches the audit trail; there is nothing to accept")
        entry = {"action": "registry.accept", "labels": dict(state["labels"])}
        return commit(root, name, state, entry, actor=actor, reason=reason)


def set_label(root: Path, name: str, label: str, version: int, *, actor: str, reason: str = "",
              signing_key: str | None = None, force: bool = False) -> dict[str, Any]:
    """Point ``label`` at ``version`` after checking that version's files on disk.

    A move to a version that means something else (task, classes, features: see
    ``compatibility``) than the one the label points at needs ``force``; the history says why.
    """
    check_label(label)
    folder = artifacts.version_dir(root, name, version)
    if not folder.is_dir():
        raise ValueError(f"model {name!r} has no version {version}")
    artifacts.verify_version(folder, expected_name=name, expected_version=int(version), signing_key=signing_key,
                             sklearn_version=installed_sklearn())

    def change(state: dict[str, Any]) -> dict[str, Any]:
        _still_there(root, name, [int(version)])
        previous = state["labels"].get(label)
        entry = {"action": "label.set", "label": label, "version": int(version), "previous": previous}
        breaking = compatibility.between_versions(root, name, previous, int(version))
        if breaking and not force:
            raise ValueError(f"{name} version {version} changes meaning against {label} version {previous} "
                             f"({'; '.join(breaking)}): give --force (API: \"force\": true) to move {label!r}")
        if breaking:
            entry.update(forced=True, breaking=breaking)
        if label == PRODUCTION:
            entry.update(_make_production(state, int(version)))
        else:
            state["labels"][label] = int(version)
        return entry

    return update(root, name, change, actor=actor, reason=reason)


def remove_label(root: Path, name: str, label: str, *, actor: str, reason: str = "") -> dict[str, Any]:
    """Remove ``label``; raise ``ValueError`` when the model does not have it."""
    check_label(label)

    def change(state: dict[str, Any]) -> dict[str, Any]:
        if label not in state["labels"]:
            raise ValueError(f"model {name!r} has no label {label!r}")
        rollout = state["rollout"]
        if label == PRODUCTION and (rollout.get("canary") or rollout.get("shadow")):
            raise ValueError(f"model {name!r} has a canary or shadows that compare against production; "
                             "end them before removing the production label")
        return {"action": "label.remove", "label": label, "previous": state["labels"].pop(label)}

    return update(root, name, change, actor=actor, reason=reason)


def record_packaged(root: Path, manifest: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """Record a new version in the history; the first version of a model becomes ``production``."""

    def change(state: dict[str, Any]) -> dict[str, Any]:
        entry = {"action": "version.packaged", "version": manifest["version"]}
        if PRODUCTION not in state["labels"]:
            state["labels"][PRODUCTION] = manifest["version"]
            entry["label"] = PRODUCTION
        return entry

    return update(root, manifest["name"], change, actor=actor, reason=manifest.get("changelog", ""))


def set_rollout(root: Path, name: str, *, canary: Any = UNSET, shadow: Any = UNSET, fallback: Any = UNSET,
                budget_ms: Any = UNSET, rules: Any = UNSET, actor: str, reason: str = "",
                signing_key: str | None = None) -> dict[str, Any]:
    """Change the parts of the rollout that are given (``canary=None`` ends a canary).

    ``rules`` is merged key by key into the current rules. Every version named must exist and
    pass verification, and none may be the ``production`` version.
    """
    artifacts.check_model_name(name)
    given: dict[str, Any] = {}
    if canary is not UNSET:
        given["canary"] = check_canary(canary)
    if shadow is not UNSET:
        given["shadow"] = check_shadow(shadow)
    if fallback is not UNSET:
        given["fallback"] = check_fallback(fallback)
    if budget_ms is not UNSET:
        given["budget_ms"] = check_budget(budget_ms)
    new_rules = check_rules(rules) if rules is not UNSET else {}
    if not given and rules is UNSET:
        raise ValueError("nothing to change: give canary, shadow, fallback, budget_ms or rules")
    named = _named_versions(given)
    for version in named:
        _loadable(root, name, version, signing_key)
    _check_rules_fit_task(root, name, new_rules)

    def change(state: dict[str, Any]) -> dict[str, Any]:
        _still_there(root, name, named)
        before = copy.deepcopy(state["rollout"])
        after = {**copy.deepcopy(before), **given, "rules": {**before["rules"], **new_rules}}
        _check_roles(name, state["labels"].get(PRODUCTION), given, after)
        state["rollout"] = after
        return {"action": "rollout.set", "before": before, "after": copy.deepcopy(after)}

    return update(root, name, change, actor=actor, reason=reason)


def promote(root: Path, name: str, *, actor: str, reason: str = "", signing_key: str | None = None) -> dict[str, Any]:
    """Make the canary version ``production`` and end the canary."""
    artifacts.check_model_name(name)

    def change(state: dict[str, Any]) -> dict[str, Any]:
        canary = state["rollout"]["canary"]
        if not canary:
            raise ValueError(f"model {name!r} has no canary to promote")
        _loadable(root, name, canary["version"], signing_key)
        state["rollout"]["canary"] = None
        entry = {"action": "promote", "from": state["labels"].get(PRODUCTION), "to": canary["version"],
                 "canary": canary}
        return {**entry, **_make_production(state, canary["version"])}

    return update(root, name, change, actor=actor, reason=reason)


def rollback(root: Path, name: str, *, actor: str, reason: str = "", signing_key: str | None = None) -> dict[str, Any]:
    """Point ``production`` back at the previous production version and end any canary."""
    artifacts.check_model_name(name)

    def change(state: dict[str, Any]) -> dict[str, Any]:
        if not state["production_stack"]:
            raise ValueError(f"model {name!r} has no previous production version to roll back to")
        target = state["production_stack"][-1]
        _loadable(root, name, target, signing_key)
        state["production_stack"].pop()
        entry = {"action": "rollback", "from": state["labels"].get(PRODUCTION), "to": target}
        if state["rollout"]["canary"]:
            entry["canary_ended"], state["rollout"]["canary"] = state["rollout"]["canary"], None
        return {**entry, **_make_production(state, target, push=False)}

    return update(root, name, change, actor=actor, reason=reason)


def gc(root: Path, name: str, *, keep: int, actor: str, reason: str = "", dry_run: bool = False) -> list[int]:
    """Delete the version folders older than the newest ``keep`` that nothing points at; return them.

    The deletion is ``registry_gc``'s; the history entry (and audit record) is written here.
    """

    def record(state: dict[str, Any], entry: dict[str, Any]) -> None:
        commit(root, name, state, entry, actor=actor, reason=reason)

    return registry_gc.collect(root, name, keep=keep, record=record, dry_run=dry_run)


def _make_production(state: dict[str, Any], version: int, *, push: bool = True) -> dict[str, Any]:
    """Point ``production`` at ``version``; remember the old one and take ``version`` out of the rollout."""
    previous = state["labels"].get(PRODUCTION)
    state["labels"][PRODUCTION] = version
    if push and previous is not None and previous != version:
        state["production_stack"] = [*state["production_stack"], previous][-STACK_LIMIT:]
    notes: dict[str, Any] = {}
    rollout = state["rollout"]
    if rollout["canary"] and rollout["canary"]["version"] == version:
        notes["canary_ended"], rollout["canary"] = rollout["canary"], None
    if version in rollout["shadow"]:
        notes["shadow_removed"] = version
        rollout["shadow"] = [v for v in rollout["shadow"] if v != version]
    return notes


def _named_versions(given: dict[str, Any]) -> list[int]:
    named = list(given.get("shadow", []))
    if given.get("canary"):
        named.append(given["canary"]["version"])
    if given.get("fallback") is not None:
        named.append(given["fallback"])
    return sorted(set(named))


def _check_roles(name: str, production: int | None, given: dict[str, Any], after: dict[str, Any]) -> None:
    """Refuse a rollout that gives the production version a second role or a canary nothing to compete with."""
    canary = after["canary"]["version"] if after["canary"] else None
    if given.get("canary"):
        if production is None:
            raise ValueError(f"model {name!r} has no production version to run a canary against")
        if canary == production:
            raise ValueError(f"version {canary} is production; a canary must be another version")
    if production in given.get("shadow", []):
        raise ValueError(f"version {production} is production; it cannot also be a shadow")
    if ("canary" in given or "shadow" in given) and canary in after["shadow"]:
        raise ValueError(f"version {canary} cannot be both the canary and a shadow")


def _loadable(root: Path, name: str, version: int, signing_key: str | None) -> None:
    folder = artifacts.version_dir(root, name, version)
    if not folder.is_dir():
        raise ValueError(f"model {name!r} has no version {version}")
    try:
        artifacts.verify_version(folder, expected_name=name, expected_version=version, signing_key=signing_key,
                                 sklearn_version=installed_sklearn())
    except ArtifactError as exc:
        raise ValueError(f"version {version} of {name!r} cannot be loaded: {exc}") from None


def _still_there(root: Path, name: str, versions: list[int]) -> None:
    # checked again under the lock: a gc may have deleted a version after it was verified
    for version in versions:
        if not artifacts.version_dir(root, name, version).is_dir():
            raise ValueError(f"model {name!r} has no version {version}")


TASK_RULES = {"min_live_accuracy": "classification", "max_live_rmse": "regression"}


def _check_rules_fit_task(root: Path, name: str, rules: dict[str, Any]) -> None:
    """Refuse a live-metric rule that could never fire for this model's task."""
    production = read_state(root, name)["labels"].get(PRODUCTION)
    if production is None:
        return
    task = artifacts.read_manifest(artifacts.version_dir(root, name, production)).get("task")
    for rule, needs in TASK_RULES.items():
        if rules.get(rule) is not None and task != needs:
            raise ValueError(f"{rule} applies to {needs} models; {name!r} is a {task} model")


def installed_sklearn() -> str:
    """The scikit-learn this process would load models with (without importing it)."""
    return importlib.metadata.version("scikit-learn")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
