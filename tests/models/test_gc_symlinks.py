"""gc never follows a symlink: neither one planted inside a version nor a leftover ``.gc-*`` link."""

from __future__ import annotations

import os
import stat

import pytest

from service.models import artifacts, registry
from tests.builders import package


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "artifacts"
    for _ in range(3):
        package(root, "m", record=True)  # production 1; 2 and 3 unused
    return root


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    victim = folder / "secret.txt"
    victim.write_text("keep me")
    os.chmod(victim, 0o400)
    os.chmod(folder, 0o555)
    yield folder
    os.chmod(folder, 0o755)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_link_inside_a_version_is_removed_not_followed(root, outside):
    version = root / "m" / "2"
    os.chmod(version, 0o755)
    (version / "link").symlink_to(outside / "secret.txt")
    (version / "dirlink").symlink_to(outside)
    assert registry.gc(root, "m", keep=1, actor="a") == [2]
    assert not version.exists()
    assert mode(outside / "secret.txt") == 0o400 and mode(outside) == 0o555
    assert (outside / "secret.txt").read_text() == "keep me"


def test_a_leftover_gc_link_is_removed_not_followed(root, outside):
    (root / "m" / f"{registry.GC_PREFIX}2-x").symlink_to(outside)
    assert registry.gc(root, "m", keep=1, actor="a") == [2]
    assert not (root / "m" / f"{registry.GC_PREFIX}2-x").is_symlink()
    assert (outside / "secret.txt").read_text() == "keep me" and mode(outside / "secret.txt") == 0o400


def test_a_version_folder_that_is_a_link_loses_only_the_link(root, outside):
    real = root / "m" / "2"
    os.chmod(real, 0o755)
    for child in real.iterdir():
        os.chmod(child, 0o644)
        child.unlink()
    real.rmdir()
    real.symlink_to(outside, target_is_directory=True)
    assert 2 in artifacts.list_versions(root, "m")
    assert registry.gc(root, "m", keep=1, actor="a") == [2]
    assert not real.exists() and not real.is_symlink()
    assert (outside / "secret.txt").read_text() == "keep me" and mode(outside) == 0o555
