"""``audit verify`` / ``audit export`` and the registry changes the CLI records."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.models import registry
from service.security import audit
from service.store import Store
from tests.builders import package
from tests.conftest import SCRUBBED_ENV


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "artifacts"
    package(root, "m", record=True)
    package(root, "m")
    runner = CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(root),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    return root, runner, tmp_path / "db.sqlite"


def test_an_empty_trail_verifies(setup):
    _, runner, _ = setup
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0 and "audit chain intact: 0 record(s)" in result.output


def test_a_cli_label_change_is_recorded_and_checkable(setup):
    root, runner, db = setup
    result = runner.invoke(cli, ["label", "set", "m", "production", "2", "--reason", "ship"])
    assert result.exit_code == 0, result.output
    entry = registry.read_state(root, "m")["history"][-1]
    store = Store(db)
    [record] = audit.find(store, "label.set")
    store.close()
    assert record.actor.startswith("cli:") and record.hash == entry["audit"] and record.details["labels"] == {
        "production": 2}
    assert runner.invoke(cli, ["audit", "verify"]).exit_code == 0
    assert registry.AUDIT.get() is None  # the hook ends with the command


def test_export_to_stdout(setup):
    _, runner, _ = setup
    assert runner.invoke(cli, ["label", "set", "m", "staging", "1"]).exit_code == 0
    result = runner.invoke(cli, ["audit", "export", "--out", "-"])
    assert result.exit_code == 0
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["action"] == "label.set" and line["target"] == "model:m" and line["seq"] == 1
