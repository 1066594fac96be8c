"""The in-process tests where CPython versions differ most, run under CPython 3.13 as well.

`make test` runs on the virtualenv's Python (3.11 on CI); the locks install on 3.12 and 3.13 too
(`make lock` checks that they resolve the same). This builds a 3.13 virtualenv from the runtime lock
plus pytest's entries of the dev lock (hash-checked, as `make` installs) and runs a few modules under
it with warnings as errors (pyproject.toml): the SQLite store (3.13 warns of every connection left to
the garbage collector), the background loops an app starts and stops, and predictions from the demo
models loaded by joblib through the whole HTTP shell. `make test-fast PYTHON=python3.13 VENV=.venv-3.13`
runs every in-process test there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SCRUBBED_ENV
from tests.pythons import interpreter

pytestmark = pytest.mark.e2e

VERSION = "3.13"
UV = Path(sys.executable).parent / "uv"
MODULES = ("tests/store/test_store.py", "tests/monitoring/test_retention_loop.py", "tests/api/test_predict.py")
#: What the modules need beyond the runtime lock: pytest and requests (tests/conftest.py), with their own.
TEST_PACKAGES = ("pytest", "pluggy", "iniconfig", "pygments", "requests", "charset-normalizer", "idna", "urllib3",
                 "certifi")


def lock_entries(lock: Path, names: tuple[str, ...]) -> str:
    """The entries (pin and hashes) of ``names`` in a lock file, as a lock file of their own."""
    found: dict[str, list[str]] = {}
    entry: list[str] | None = None
    for line in lock.read_text().splitlines(keepends=True):
        if line[:1].isalnum():  # "name==version \" starts an entry; its hashes follow, indented
            entry = found.setdefault(line.split("==")[0], [])
        elif not line.startswith(" ") or line.lstrip().startswith("#"):
            entry = None
            continue
        if entry is not None:
            entry.append(line)
    missing = set(names) - set(found)
    assert not missing, f"not pinned in {lock.name}: {sorted(missing)}"
    return "".join("".join(found[name]) for name in names)


def test_the_store_loops_and_predictions_pass_on_cpython_3_13(tmp_path: Path):
    python = interpreter(VERSION)
    if python is None:
        pytest.skip(f"no CPython {VERSION} on PATH or under ~/.pyenv: install it to run these modules under it")
    extras = tmp_path / "test-packages.lock"
    extras.write_text(lock_entries(REPO / "requirements-dev.lock", TEST_PACKAGES))
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "--quiet", "--python", python, str(venv)], check=True, timeout=120)
    subprocess.run([str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--require-hashes",
                    "-r", str(REPO / "requirements.lock"), "-r", str(extras)], check=True, timeout=900)
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUBBED_ENV and not k.startswith(("PYTEST_", "PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "pytest"), "-m", "not e2e and not postgres", *MODULES],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == f"({VERSION.replace('.', ', ')})"
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout) and " failed" not in done.stdout, done.stdout[-2000:]
