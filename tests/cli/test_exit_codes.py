"""Every exit code the command-line reference (docs/reference/cli.md) states, checked against the real commands.

0: done; 1: could not, with one ``Error:`` line; 2: the command line itself is wrong, with
click's usage line before the ``Error:`` line. Each case runs the command as installed (the
``cli`` group) over the app's own artifacts and database.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.cli import cli
from tests.builders import flip_byte

CLI_REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"

SUCCESS = [("list",), ("show", "diabetes"), ("verify",), ("verify", "diabetes"), ("history", "diabetes"),
           ("rollout", "show", "diabetes"), ("report", "diabetes", "--window", "10"), ("compare", "diabetes"),
           ("registry", "check"), ("audit", "verify"), ("card", "diabetes"), ("config", "--quiet")]
FAILURE = [
    (("show", "nope"), "model 'nope' not found under {root}"),
    (("show", "diabetes", "7"), "model 'diabetes' has no version 7"),
    (("label", "set", "diabetes", "production", "9"), None),
    (("card", "diabetes", "7"), "No such model version."),
    (("rollout", "set", "diabetes", "--weight", "5", "--reason", "r"),
     "model 'diabetes' has no canary; give --canary with --weight"),
    (("promote", "diabetes", "--reason", "r"), None),
    (("export", "diabetes", "7", "--format", "onnx", "--out", "{tmp}/x.onnx"), None),
    (("restore", "{tmp}"), None),
]
USAGE = [
    ("report", "diabetes", "--window", "0"), ("report", "diabetes", "--window", "100", "--minutes", "5"),
    ("report", "diabetes", "--minutes", "0"), ("compare", "diabetes", "--window", "0"), ("report",),
    ("show", "diabetes", "two"), ("list", "--no-such-option"), ("no-such-command",),
    ("gc", "diabetes"), ("gc", "diabetes", "--keep", "0"), ("export", "diabetes", "1", "--format", "pdf"),
    ("rollout", "set", "diabetes", "--reason", "r"), ("rollout", "set", "diabetes", "--canary", "2", "--reason", "r"),
    ("rollout", "set", "diabetes", "--end-canary", "--weight", "5", "--reason", "r"),
    ("keys", "create", "--name", "app"), ("erase",), ("audit", "export"),
    ("backup",), ("backup", "somewhere", "--keep", "0"), ("restore",), ("restore", "/no/such/backup"),
]


def test_the_reference_states_the_three_codes():
    section = CLI_REFERENCE.read_text(encoding="utf-8").split("# Command line\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\| ([0-9]) \|", section, re.M) == ["0", "1", "2"]


@pytest.mark.parametrize("args", SUCCESS, ids=" ".join)
def test_success_is_0(runner, args):
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    assert "Error" not in result.stderr


@pytest.mark.parametrize(("args", "message"), FAILURE, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_a_command_that_cannot_do_it_is_1_with_one_line(runner, app, tmp_path, args, message):
    root = app.config["SERVICE_CONFIG"].artifacts_dir
    result = runner.invoke(cli, [arg.format(tmp=tmp_path) for arg in args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    if message is not None:
        assert result.stderr == f"Error: {message.format(root=root)}\n"
    assert "Traceback" not in result.output


def test_a_failed_check_is_1(runner, app):
    flip_byte(app.config["SERVICE_CONFIG"].artifacts_dir / "diabetes" / "1" / "model.joblib")
    result = runner.invoke(cli, ["verify", "diabetes"])
    assert (result.exit_code, result.stderr) == (1, "Error: 1 version(s) failed verification\n")


@pytest.mark.parametrize("args", USAGE, ids=" ".join)
def test_a_wrong_command_line_is_2_with_usage_and_one_error_line(runner, args):
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: ") and len(lines) <= 4, result.stderr
    assert "Traceback" not in result.output
