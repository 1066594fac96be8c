"""``serve``: the checks `make serve` makes, then Gunicorn in place of the process, with the
gunicorn.conf.py found beside the package (the installed copy is tested in tests/e2e/test_install.py)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.cli import serve as serve_module
from tests.conftest import REPO, SCRUBBED_ENV


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the command ``serve`` would become instead of becoming it."""
    seen: list[list[str]] = []
    monkeypatch.setattr(serve_module.os, "execv", lambda path, args: seen.append([path, *args[1:]]))
    return seen


def invoke(tmp_path: Path, artifacts: Path, *args: str, **env: str):
    base = {name: None for name in SCRUBBED_ENV}
    base.update(ARTIFACTS_DIR=str(artifacts), DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
                LOCAL_ADMIN_KEYS_FILE=str(tmp_path / "var" / "local-admin-keys.json"), **env)
    return CliRunner(env=base).invoke(cli, ["serve", *args])


def test_a_checkout_serves_with_its_own_gunicorn_conf():
    assert serve_module.gunicorn_config() == REPO / "gunicorn.conf.py"
    assert serve_module.gunicorn_command(("--bind", "127.0.0.1:9")) == [
        sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "--bind", "127.0.0.1:9",
        "service.app:create_app()"]


def test_serve_checks_makes_the_local_admin_key_then_becomes_gunicorn(tmp_path, artifact_root, execs):
    result = invoke(tmp_path, artifact_root)
    assert result.exit_code == 0, result.output
    assert "breast-cancer: ok" in result.stdout and "diabetes: ok" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("sk_")  # the local admin key, printed once
    assert (tmp_path / "var" / "local-admin-keys.json").is_file()
    assert execs == [serve_module.gunicorn_command()]
    again = invoke(tmp_path, artifact_root, "--workers", "3")
    assert "sk_" not in again.stdout and execs[-1][-3:] == ["--workers", "3", "service.app:create_app()"]


def test_a_bad_configuration_stops_before_gunicorn(tmp_path, artifact_root, execs):
    result = invoke(tmp_path, artifact_root, PORT="abc")
    assert result.exit_code == 1 and "configuration error: PORT='abc' is invalid" in result.stderr and not execs


def test_an_unreadable_registry_stops_before_gunicorn(tmp_path, artifact_root, execs):
    (artifact_root / "diabetes" / "registry.json").write_text("{")
    result = invoke(tmp_path, artifact_root)
    assert result.exit_code == 1 and "diabetes: unreadable" in result.stdout and not execs


def test_the_console_command_is_the_click_group():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"sklearn-server": "service.cli:main"}
    assert project["requires-python"] == ">=3.11" and project["dynamic"] == ["dependencies", "optional-dependencies"]
