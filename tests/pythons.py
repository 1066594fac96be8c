"""The supported CPythons this machine has besides the one running the tests (on PATH or under pyenv)."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from pathlib import Path


def interpreter(version: str) -> str | None:
    """A CPython ``version`` on this machine: the one running the tests, on PATH, or under pyenv."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    found = [shutil.which(f"python{version}"),
             *sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"{version}.*" / "bin" / f"python{version}")))]
    for candidate in filter(None, found):  # a pyenv shim is on PATH but fails unless its version is selected
        if subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
            return candidate
    return None
