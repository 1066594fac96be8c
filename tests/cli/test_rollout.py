import json
import os

import click
import pytest
from click.testing import CliRunner

from service.cli.rollout import COMMANDS
from service.models import artifacts, registry
from service.models.packaging import package_model
from service.models.rollout import DEFAULT_RULES
from tests.builders import fitted


@click.group()
def cli():
    """A stand-in for service.cli's group, with only the rollout commands."""


for command in COMMANDS:
    cli.add_command(command)


@pytest.fixture
def runner():
    return CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None, "USER": "tester", "LOGNAME": "tester"})


@pytest.fixture
def root(tmp_path):
    """Model ``m`` with versions 1-4 and ``production`` at 1."""
    root = tmp_path / "artifacts"
    model, X, y = fitted()
    for _ in range(4):
        registry.record_packaged(root, package_model(model, "m", root, X, y), actor="ci")
    return root


def run(runner, root, *args):
    return runner.invoke(cli, [*args, "--artifacts-dir", str(root)])


def assert_one_line_error(result, text):
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"Error: {text}\n"


def rollout_of(root):
    return registry.read_state(root, "m")["rollout"]


def test_show_prints_the_rollout_as_json(runner, root):
    result = run(runner, root, "rollout", "show", "m")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"model": "m", "labels": {"production": 1},
                                         "rollout": registry.empty_state()["rollout"], "production_stack": []}


def test_set_a_canary_shadow_fallback_budget_and_rules(runner, root):
    result = run(runner, root, "rollout", "set", "m", "--canary", "2", "--weight", "10", "--shadow", "3", "--shadow", "4",
                 "--fallback", "1", "--budget-ms", "250", "--max-error-rate", "0.1", "--max-p99-ms", "400",
                 "--min-live-accuracy", "0.9", "--window-seconds", "60", "--min-requests", "20", "--reason", "try v2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "m: canary 2 at 10%; shadow 3, 4; fallback 1; budget 250 ms\n"
    assert rollout_of(root) == {"canary": {"version": 2, "weight": 10.0}, "shadow": [3, 4], "fallback": 1,
                                "budget_ms": 250.0, "rules": {**DEFAULT_RULES, "window_seconds": 60.0, "min_requests": 20,
                                                              "max_error_rate": 0.1, "max_p99_ms": 400.0,
                                                              "min_live_accuracy": 0.9}}
    entry = registry.read_state(root, "m")["history"][-1]
    assert (entry["action"], entry["actor"], entry["reason"]) == ("rollout.set", "cli:tester", "try v2")


def test_set_changes_only_what_is_given(runner, root):
    assert run(runner, root, "rollout", "set", "m", "--canary", "2", "--weight", "10", "--shadow", "3",
               "--reason", "r").exit_code == 0
    result = run(runner, root, "rollout", "set", "m", "--weight", "25.5", "--max-error-rate", "off", "--reason", "more")
    assert result.exit_code == 0, result.output
    assert result.stdout == "m: canary 2 at 25.5%; shadow 3; fallback production; no budget\n"
    assert rollout_of(root)["rules"] == {**DEFAULT_RULES, "max_error_rate": None}

    result = run(runner, root, "rollout", "set", "m", "--end-canary", "--no-shadow", "--no-fallback", "--no-budget",
                 "--reason", "done")
    assert result.exit_code == 0, result.output
    assert result.stdout == "m: no canary; no shadow; fallback production; no budget\n"


@pytest.mark.parametrize("args, message", [
    (["--weight", "5"], "model 'm' has no canary; give --canary with --weight"),
    (["--canary", "1", "--weight", "5"], "version 1 is production; a canary must be another version"),
    (["--canary", "9", "--weight", "5"], "model 'm' has no version 9"),
    (["--canary", "2", "--weight", "150"], "canary weight must be a number from 0 to 100"),
    (["--budget-ms", "-1"], "budget_ms must be a number from 0.1 to 600000"),
    (["--max-error-rate", "3"], "max_error_rate must be a number from 0 to 1"),
])
def test_set_refusals_are_one_line_and_change_nothing(runner, root, args, message):
    before = (root / "m" / "registry.json").read_bytes()
    assert_one_line_error(run(runner, root, "rollout", "set", "m", *args, "--reason", "r"), message)
    assert (root / "m" / "registry.json").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    ([], "nothing to change: give --canary/--weight, --end-canary, --shadow, --fallback, --budget-ms or a rule option"),
    (["--canary", "2"], "--canary needs --weight (the share of traffic in percent)"),
    (["--end-canary", "--weight", "5"], "--end-canary cannot be combined with --canary/--weight"),
    (["--shadow", "2", "--no-shadow"], "--no-shadow cannot be combined with --shadow"),
    (["--fallback", "2", "--no-fallback"], "--no-fallback cannot be combined with --fallback"),
])
def test_a_command_line_that_contradicts_itself_is_a_usage_error_that_changes_nothing(runner, root, args, message):
    before = (root / "m" / "registry.json").read_bytes()
    result = run(runner, root, "rollout", "set", "m", *args, "--reason", "r")
    assert result.exit_code == 2 and result.stderr.endswith(f"\nError: {message}\n"), result.output
    assert (root / "m" / "registry.json").read_bytes() == before


def test_set_needs_a_reason_and_checks_rule_values(runner, root):
    missing = run(runner, root, "rollout", "set", "m", "--canary", "2", "--weight", "5")
    assert missing.exit_code == 2 and "Missing option '--reason'" in missing.stderr
    bad = run(runner, root, "rollout", "set", "m", "--max-p99-ms", "fast", "--reason", "r")
    assert bad.exit_code == 2 and "'fast' is neither a number nor 'off'" in bad.stderr


def test_set_refuses_a_tampered_version(runner, root):
    path = root / "m" / "3" / "model.joblib"
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes() + b"x")
    result = run(runner, root, "rollout", "set", "m", "--shadow", "3", "--reason", "r")
    assert_one_line_error(result, "version 3 of 'm' cannot be loaded: file model.joblib has size "
                                  f"{path.stat().st_size}, manifest says {path.stat().st_size - 1}")


def test_promote_and_rollback(runner, root):
    assert_one_line_error(run(runner, root, "promote", "m", "--reason", "r"), "model 'm' has no canary to promote")
    assert run(runner, root, "rollout", "set", "m", "--canary", "2", "--weight", "10", "--reason", "r").exit_code == 0

    promoted = run(runner, root, "promote", "m", "--reason", "good")
    assert promoted.exit_code == 0, promoted.output
    assert promoted.stdout == "m: production -> 2 (was 1); canary ended\n"

    assert run(runner, root, "rollout", "set", "m", "--canary", "3", "--weight", "5", "--reason", "r").exit_code == 0
    rolled = run(runner, root, "rollback", "m", "--reason", "bad")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout == "m: production -> 1 (was 2); canary 3 at 5% ended\n"
    assert registry.read_state(root, "m")["labels"] == {"production": 1}

    assert_one_line_error(run(runner, root, "rollback", "m", "--reason", "r"),
                          "model 'm' has no previous production version to roll back to")
    history = registry.read_state(root, "m")["history"]
    assert [(e["action"], e["reason"]) for e in history if e["action"] in ("promote", "rollback")] == [
        ("promote", "good"), ("rollback", "bad")]


def test_gc_dry_run_then_for_real(runner, root):
    registry.set_label(root, "m", "staging", 2, actor="a")
    dry = run(runner, root, "gc", "m", "--keep", "1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == "m: would delete versions 3\n"
    assert artifacts.list_versions(root, "m") == [1, 2, 3, 4]

    real = run(runner, root, "gc", "m", "--keep", "1")
    assert real.stdout == "m: deleted versions 3\n"
    assert artifacts.list_versions(root, "m") == [1, 2, 4]
    assert run(runner, root, "gc", "m", "--keep", "1").stdout == "m: nothing to delete\n"

    zero = run(runner, root, "gc", "m", "--keep", "0")
    assert zero.exit_code == 2 and "0 is not in the range x>=1" in zero.stderr
    assert_one_line_error(run(runner, root, "gc", "nope", "--keep", "1"),
                          f"model 'nope' not found under {root}")


def test_bad_model_names_are_one_line_errors(runner, root):
    assert_one_line_error(run(runner, root, "rollout", "show", "../m"), "model names match [a-z0-9][a-z0-9_-]{0,63}")
    assert_one_line_error(run(runner, root, "promote", "../m", "--reason", "r"),
                          "model names match [a-z0-9][a-z0-9_-]{0,63}")


def test_the_artifacts_dir_comes_from_the_environment(root):
    result = CliRunner(env={"ARTIFACTS_DIR": str(root)}).invoke(cli, ["rollout", "show", "m"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels"] == {"production": 1}


def test_commands_have_help(runner):
    for args in (["rollout", "set", "--help"], ["rollout", "show", "--help"], ["promote", "--help"],
                 ["rollback", "--help"], ["gc", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0 and "--artifacts-dir" in result.stdout
