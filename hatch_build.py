"""Build hook: the package's dependencies are the pins in requirements.txt, the one list people edit;
the ``batch`` extra is requirements-batch.txt (pyarrow, for ``sklearn-server score``)."""

from __future__ import annotations

from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface


def pins(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines left out)."""
    return [line.split(" #", 1)[0].strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


class RequirementsMetadataHook(MetadataHookInterface):
    """Set ``dependencies`` and the ``batch`` extra from the requirements files."""

    def update(self, metadata: dict) -> None:
        metadata["dependencies"] = pins(Path(self.root) / "requirements.txt")
        metadata["optional-dependencies"] = {"batch": pins(Path(self.root) / "requirements-batch.txt")}
