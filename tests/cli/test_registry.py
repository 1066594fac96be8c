"""``python -m service registry check|restore``: find and repair an unreadable registry.json."""

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.models import registry


@pytest.fixture
def runner():
    return CliRunner(env={"ARTIFACTS_DIR": None})


def run(runner, root, *args):
    return runner.invoke(cli, [*args, "--artifacts-dir", str(root)])


def test_check_says_ok_for_readable_files(runner, artifact_root):
    result = run(runner, artifact_root, "registry", "check")
    assert result.exit_code == 0 and result.output == "breast-cancer: ok\ndiabetes: ok\n"


def test_check_names_the_broken_file_and_how_to_repair_it(runner, artifact_root):
    (artifact_root / "diabetes" / "registry.json").write_text("{")
    result = run(runner, artifact_root, "registry", "check")
    assert result.exit_code == 1
    assert "diabetes: unreadable: registry.json is not valid JSON" in result.output
    assert "restore it with `python -m service registry restore diabetes`" in result.output
    assert result.output.endswith("Error: unreadable registry state: diabetes\n")
    (artifact_root / "diabetes" / registry.LAST_GOOD_FILE).unlink()
    assert "no last-good copy: repair registry.json by hand" in run(runner, artifact_root, "registry", "check",
                                                                    "diabetes").output


def test_restore_repairs_and_labels_work_again(runner, artifact_root):
    (artifact_root / "diabetes" / "registry.json").write_text("{")
    refused = run(runner, artifact_root, "label", "set", "diabetes", "staging", "1")
    assert refused.exit_code == 1 and "registry restore diabetes" in refused.output
    result = run(runner, artifact_root, "registry", "restore", "diabetes", "--reason", "torn write")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("diabetes: restored from the last-good copy (labels: production=1); "
                                    "the broken file is kept as .registry.broken-")
    assert run(runner, artifact_root, "label", "set", "diabetes", "staging", "1").exit_code == 0
    again = run(runner, artifact_root, "registry", "restore", "diabetes")
    assert again.exit_code == 1 and "is readable; there is nothing to restore" in again.output


def test_restore_without_a_copy_fails_cleanly(runner, artifact_root):
    (artifact_root / "diabetes" / "registry.json").write_text("{")
    (artifact_root / "diabetes" / registry.LAST_GOOD_FILE).unlink()
    result = run(runner, artifact_root, "registry", "restore", "diabetes")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no readable last-good copy" in result.output
    assert (artifact_root / "diabetes" / "registry.json").read_text() == "{"
