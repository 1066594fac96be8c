"""Build hook: the package's dependencies are the pins in requirements.txt, the one list people edit."""

from __future__ import annotations

from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface


class RequirementsMetadataHook(MetadataHookInterface):
    """Set ``dependencies`` from requirements.txt (comments and blank lines left out)."""

    def update(self, metadata: dict) -> None:
        lines = (Path(self.root) / "requirements.txt").read_text().splitlines()
        metadata["dependencies"] = [line.split(" #", 1)[0].strip() for line in lines
                                    if line.strip() and not line.lstrip().startswith("#")]
