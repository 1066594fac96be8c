"""Which version a batch run scores with: resolved by label as a request is, verified before unpickling.

``MODEL`` means its ``production`` label, ``MODEL@LABEL`` another label, ``MODEL:VERSION`` a
pinned version. Labels come from registry.json checked against the audit trail, with the
server's fall-back to the last-good copy (``registry.read_checked_state``); a file that cannot
be checked at all (the store does not answer) is refused, since the run's record must name a
version the trail vouches for. ``runtime.load`` verifies hashes and signature before it
unpickles. Where a worker keeps serving an older version when a label's own fails to load, a
run stops instead: it must not score a file with a version nobody chose. No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.errors import ArtifactError
from service.models import artifacts, registry
from service.serving import runtime


@dataclass(frozen=True)
class Target:
    """What the command line asked for: a model, and a label or a pinned version."""

    name: str
    label: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version is not None else f"{self.name}@{self.label}"


def parse(text: str) -> Target:
    """Parse ``MODEL``, ``MODEL@LABEL`` or ``MODEL:VERSION``; raise ``ValueError`` on anything else."""
    if "@" in text:
        name, _, label = text.partition("@")
        return Target(artifacts.check_model_name(name), label=registry.check_label(label))
    if ":" in text:
        name, _, version = text.partition(":")
        return Target(artifacts.check_model_name(name), version=artifacts.check_version(version))
    return Target(artifacts.check_model_name(text), label=registry.PRODUCTION)


@dataclass(frozen=True)
class Resolved:
    version: int
    label: str | None
    warning: str | None = None  # registry.json was not usable and its last-good copy was read


def resolve(root: Path, target: Target, verifier: registry.Verifier | None) -> Resolved:
    """Return the version ``target`` names now; raise ``ValueError`` or ``RegistryUnreadable``."""
    if not artifacts.list_versions(root, target.name):
        raise ValueError(f"model {target.name!r} not found under {root}")
    if target.version is not None:
        if target.version not in artifacts.list_versions(root, target.name):
            raise ValueError(f"model {target.name!r} has no version {target.version}")
        return Resolved(target.version, None)
    reading = registry.read_checked_state(root, target.name, verifier)
    version = reading.state["labels"].get(target.label)
    if version is None:
        raise ValueError(f"model {target.name!r} has no label {target.label!r}")
    warning = None
    if reading.error is not None:
        warning = f"registry.json of {target.name!r} not used ({reading.error}); its last-good copy was read"
    return Resolved(version, target.label, warning)


def load(root: Path, name: str, version: int, *, signing_key: str | None, backend: str) -> runtime.LoadedModel:
    """Verify the version's files (hashes, signature) and only then unpickle it; raise ``ArtifactError``.

    Lazily (``runtime.load``'s ``lazy``): a version ONNX Runtime answers is unpickled only if a chunk
    needs scikit-learn, so a run of such a version does not spend its start-up importing it.
    """
    folder = artifacts.version_dir(root, name, version)
    try:
        return runtime.load(folder, name=name, version=version, signing_key=signing_key, backend=backend, lazy=True)
    except ArtifactError as exc:
        raise ArtifactError(f"version {version} of {name!r} refused: {exc}") from None
