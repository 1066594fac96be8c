import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import joblib
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from service.cli import cli
from service.cli.common import fails_cleanly
from service.errors import StoreUnavailable
from service.models import artifacts, demo, registry
from tests.builders import flip_byte

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner():
    return CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None})


@pytest.fixture
def root(tmp_path):
    return tmp_path / "artifacts"


def run(runner, root, *args):
    return runner.invoke(cli, [*args, "--artifacts-dir", str(root)])


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory):
    template = tmp_path_factory.mktemp("demo-template") / "artifacts"
    demo.train_demo(template)
    return template


@pytest.fixture
def demo_root(demo_template, root):
    """Both demo models at version 1, as ``train-demo`` leaves them (trained once per module)."""
    shutil.copytree(demo_template, root)
    return root


def assert_one_line_error(result, text):
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: {text}\n"
    assert "Traceback" not in result.output


def test_train_demo_packages_both_models_once(runner, root):
    first = run(runner, root, "train-demo")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"packaged breast-cancer version 1: accuracy=0\.9\d{3}, .*roc_auc=0\.9\d{3}.*", lines[0])
    assert re.fullmatch(r"packaged diabetes version 1: rmse=\d+\.\d{4}, mae=\d+\.\d{4}, r2=0\.\d{4}", lines[1])
    for name in ("breast-cancer", "diabetes"):  # which backend serves, and its measured deviation, on stderr
        assert re.search(rf"^{name}: backend onnx: double skl2onnx graph within 1e-09 of scikit-learn "
                         r"\(largest deviation [0-9.e+-]+ over \d+ hold-out and \d+ probe rows\)$", first.stderr, re.M)
    assert registry.read_state(root, "breast-cancer")["labels"] == {"production": 1}

    again = run(runner, root, "train-demo")
    assert again.exit_code == 0
    assert again.stdout == f"demo models already present under {root}; nothing to do\n"

    forced = run(runner, root, "train-demo", "--force")
    assert forced.exit_code == 0
    assert "packaged breast-cancer version 2" in forced.stdout
    assert artifacts.list_versions(root, "diabetes") == [1, 2]
    assert registry.read_state(root, "diabetes")["labels"] == {"production": 1}


def test_train_demo_names_records_of_its_store_unless_no_audit(tmp_path):
    """An image build packages with --no-audit: its store is thrown away, so the history names none and
    another store's server anchors it; without it, the models are refused there until adopted."""
    def runner_for(store: str) -> CliRunner:
        return CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None,
                              "DATABASE_URL": f"sqlite:///{tmp_path / store}"})

    audited, image = tmp_path / "audited", tmp_path / "image"
    assert run(runner_for("build.db"), audited, "train-demo").exit_code == 0
    assert run(runner_for("image-build.db"), image, "train-demo", "--no-audit").exit_code == 0
    assert all("audit" in entry for entry in registry.read_state(audited, "diabetes")["history"])
    assert not any("audit" in entry for entry in registry.read_state(image, "diabetes")["history"])
    assert not (tmp_path / "image-build.db").exists()  # nothing recorded, nothing opened

    refused = run(runner_for("server.db"), audited, "registry", "check")
    assert refused.exit_code == 1 and refused.stdout.count(": refused: not adopted:") == 2, refused.output
    fine = run(runner_for("server.db"), image, "registry", "check")
    assert fine.exit_code == 0 and fine.stdout == "breast-cancer: ok\ndiabetes: ok\n", fine.output


def test_list(runner, root, demo_root):
    registry.set_label(root, "diabetes", "staging", 1, actor="test")
    result = run(runner, root, "list")
    assert result.exit_code == 0
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["breast-cancer", "versions:", "1", "labels:", "production=1"],
        ["diabetes", "versions:", "1", "labels:", "production=1,", "staging=1"],
    ]


@pytest.mark.parametrize("command", ["list", "verify"])
def test_list_and_verify_an_empty_root(runner, root, command):
    result = run(runner, root, command)
    assert result.exit_code == 0
    assert result.stdout == f"no models under {root}\n"


def test_show_hides_the_reference_profile_unless_full(runner, root, demo_root):
    result = run(runner, root, "show", "breast-cancer")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    on_disk = json.loads((root / "breast-cancer" / "1" / "manifest.json").read_text())
    assert "reference_profile" not in shown
    assert shown == {k: v for k, v in on_disk.items() if k != "reference_profile"}

    full = run(runner, root, "show", "diabetes", "1", "--full")
    assert full.exit_code == 0
    assert json.loads(full.stdout) == json.loads((root / "diabetes" / "1" / "manifest.json").read_text())
    assert "reference_profile" in json.loads(full.stdout)


def test_show_without_production_label_names_the_problem(runner, root, demo_root):
    registry.remove_label(root, "diabetes", "production", actor="test")
    assert_one_line_error(run(runner, root, "show", "diabetes"),
                          "model 'diabetes' has no production label; name a version")


def test_verify_reports_each_version_and_fails_after_a_byte_flip(runner, root, demo_root):
    ok = run(runner, root, "verify")
    assert ok.exit_code == 0
    assert ok.stdout == "ok      breast-cancer 1\nok      diabetes 1\n"

    flip_byte(root / "diabetes" / "1" / "model.joblib")
    failed = run(runner, root, "verify")
    assert failed.exit_code == 1
    assert failed.stdout == ("ok      breast-cancer 1\n"
                             "FAILED  diabetes 1: file model.joblib does not match its sha256 in the manifest\n")
    assert failed.stderr == "Error: 1 version(s) failed verification\n"

    one = run(runner, root, "verify", "breast-cancer")
    assert (one.exit_code, one.stdout) == (0, "ok      breast-cancer 1\n")


def test_verify_with_a_signing_key_refuses_unsigned_versions(runner, root, demo_root):
    result = run(runner, root, "verify", "diabetes", "--signing-key", "k")
    assert result.exit_code == 1
    assert "FAILED  diabetes 1: manifest is not signed" in result.stdout


def test_label_errors_are_one_line(runner, root, demo_root):
    assert_one_line_error(run(runner, root, "label", "remove", "diabetes", "canary"), "model 'diabetes' has no label 'canary'")
    assert_one_line_error(run(runner, root, "label", "set", "diabetes", "canary", "5"),
                          "model 'diabetes' has no version 5")
    assert_one_line_error(run(runner, root, "label", "set", "diabetes", "Canary!", "1"),
                          "labels match [a-z0-9_-]{1,64}")
    flip_byte(root / "diabetes" / "1" / "model.joblib")
    assert_one_line_error(run(runner, root, "label", "set", "diabetes", "canary", "1"),
                          "file model.joblib does not match its sha256 in the manifest")
    assert registry.read_state(root, "diabetes")["labels"] == {"production": 1}


@pytest.mark.parametrize("args", [
    ("show", "../evil", "1"),
    ("show", "Bad Name"),
    ("verify", "a/b"),
    ("history", ".."),
    ("label", "set", "../evil", "production", "1"),
    ("label", "remove", "UPPER", "production"),
])
def test_bad_model_names_exit_1_with_one_line(runner, root, demo_root, args):
    assert_one_line_error(run(runner, root, *args), "model names match [a-z0-9][a-z0-9_-]{0,63}")


EVERY_MODEL_COMMAND = [
    ("show", "x"), ("show", "x", "1"), ("verify", "x"), ("history", "x"),
    ("label", "set", "x", "production", "1"), ("label", "remove", "x", "production"),
    ("rollout", "show", "x"), ("rollout", "set", "x", "--canary", "1", "--weight", "5", "--reason", "r"),
    ("promote", "x", "--reason", "r"), ("rollback", "x", "--reason", "r"), ("gc", "x", "--keep", "1"),
    ("compare", "x"), ("report", "x"), ("registry", "check", "x"), ("registry", "restore", "x"),
]


@pytest.mark.parametrize("args", EVERY_MODEL_COMMAND, ids=" ".join)
def test_an_unknown_model_is_a_one_line_error_that_changes_nothing(runner, root, demo_root, tmp_path, args):
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = runner.invoke(cli, [*args, "--artifacts-dir", str(root)],
                           env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    assert_one_line_error(result, f"model 'x' not found under {root}")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_folder_without_versions_is_not_a_model(runner, root, demo_root):
    (root / "x").mkdir()
    (root / "x" / ".registry.lock").touch()
    assert_one_line_error(run(runner, root, "history", "x"), f"model 'x' not found under {root}")


def test_an_unknown_model_under_a_missing_root_names_the_root(runner, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(run(runner, missing, "show", "diabetes"), f"model 'diabetes' not found under {missing}")
    assert not missing.exists()


def test_model_commands_still_print_help(runner):
    for args in EVERY_MODEL_COMMAND:
        command = list(args[:args.index("x")])
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0 and "NAME" in result.stdout, (command, result.output)


def test_service_errors_are_one_line(runner):
    @click.command()
    @fails_cleanly
    def broken():
        raise StoreUnavailable("the database is down")

    assert_one_line_error(runner.invoke(broken), "the database is down")


def test_show_refuses_a_bad_version(runner, root, demo_root):
    result = run(runner, root, "show", "diabetes", "../1")  # never reaches a path: click refuses the argument
    assert result.exit_code == 2 and "Error: Invalid value for '[VERSION]': '../1' is not a valid integer" in result.stderr


@pytest.fixture
def user_model(tmp_path):
    """A model and a hold-out CSV on which it scores well but not perfectly."""
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], "c": [0, 1] * 5})
    y = pd.Series([0, 0, 0, 0, 1, 0, 1, 1, 1, 1], name="label")
    model = LogisticRegression().fit(X, y)
    model_path, data_path = tmp_path / "model.joblib", tmp_path / "holdout.csv"
    joblib.dump(model, model_path)
    X.assign(label=y).to_csv(data_path, index=False)
    accuracy = float((model.predict(X) == y).mean())
    assert accuracy < 0.99999
    return model_path, data_path, accuracy


def package_args(user_model, *extra):
    model_path, data_path, _ = user_model
    return ("package", "--model", str(model_path), "--data", str(data_path), "--target", "label", *extra)


def test_label_set_remove_and_history(runner, root, user_model):
    for changelog in ("first", "second"):
        assert run(runner, root, *package_args(user_model, "--name", "user", "--changelog", changelog)).exit_code == 0
    set_ = run(runner, root, "label", "set", "user", "production", "2", "--reason", "better recall")
    assert (set_.exit_code, set_.stdout) == (0, "user: production -> 2 (was 1)\n")
    staging = run(runner, root, "label", "set", "user", "staging", "1")
    assert staging.stdout == "user: staging -> 1 (was None)\n"
    removed = run(runner, root, "label", "remove", "user", "staging", "--reason", "done")
    assert (removed.exit_code, removed.stdout) == (0, "user: removed staging (was 1)\n")
    assert registry.read_state(root, "user")["labels"] == {"production": 2}

    history = run(runner, root, "history", "user")
    assert history.exit_code == 0
    lines = history.stdout.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z  cli:", line) for line in lines)
    rows = [line.split()[2:] for line in lines]
    assert rows == [
        ["version.packaged", "label=production", "version=1", "first"],
        ["version.packaged", "version=2", "second"],
        ["label.set", "label=production", "version=2", "previous=1", "better", "recall"],
        ["label.set", "label=staging", "version=1"],
        ["label.remove", "label=staging", "previous=1", "done"],
    ]


def test_package_quality_gate_failure_shows_the_measured_value(runner, root, user_model):
    result = run(runner, root, *package_args(user_model, "--name", "user", "--min", "accuracy=0.99999"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(
        f"Error: quality gate failed: accuracy = {user_model[2]:.4f}, required >= 0.99999 (all measured: accuracy=")
    assert artifacts.list_versions(root, "user") == []


def test_package_without_a_gate_writes_version_1_as_production(runner, root, user_model, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"c": {"type": "category", "categories": [0, 1]}}))
    result = run(runner, root, *package_args(user_model, "--name", "user", "--min", "accuracy=0.5",
                                             "--schema", str(schema), "--changelog", "first"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"packaged user version 1: accuracy={user_model[2]:.4f}" + result.stdout.splitlines()[0].split(
            f"accuracy={user_model[2]:.4f}", 1)[1],
        "user had no production version; version 1 is now production",
    ]
    manifest = artifacts.verify_version(root / "user" / "1", expected_name="user", expected_version=1).manifest
    assert manifest["changelog"] == "first"
    assert manifest["training_data"] is None  # --data is the hold-out: it is recorded as such
    assert manifest["evaluation_data"]["source"] == str(user_model[1])
    assert [(f["name"], f["type"]) for f in manifest["input"]["features"]] == [("x", "float"), ("c", "category")]
    assert registry.read_state(root, "user")["labels"] == {"production": 1}

    second = run(runner, root, *package_args(user_model, "--name", "user"))
    assert second.exit_code == 0
    assert second.stdout.startswith("packaged user version 2: ") and second.stdout.count("\n") == 1
    assert registry.read_state(root, "user")["labels"] == {"production": 1}


@pytest.mark.parametrize("extra, message", [
    (("--name", "Bad Name"), "model names match [a-z0-9][a-z0-9_-]{0,63}"),
    (("--name", "user", "--min", "accuracy"), "expected METRIC=VALUE, got 'accuracy'"),
    (("--name", "user", "--max", "rmse=low"), "threshold for 'rmse' is not a number"),
    (("--name", "user", "--min", "auc=0.5"), None),
])
def test_package_input_errors_are_one_line(runner, root, user_model, extra, message):
    result = run(runner, root, *package_args(user_model, *extra))
    if message is None:
        assert result.exit_code == 1 and result.stderr.startswith("Error: unknown metric(s) auc; measured: accuracy=")
        assert result.stderr.count("\n") == 1
    else:
        assert_one_line_error(result, message)
    assert not (root / "user").exists()


def test_package_refuses_a_missing_target_and_a_non_model(runner, root, user_model, tmp_path):
    model_path, data_path, _ = user_model
    result = run(runner, root, "package", "--model", str(model_path), "--data", str(data_path),
                 "--target", "nope", "--name", "user")
    assert_one_line_error(result, f"--target 'nope' is not a column of {data_path}")
    not_a_model = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2]}, not_a_model)
    result = run(runner, root, "package", "--model", str(not_a_model), "--data", str(data_path),
                 "--target", "label", "--name", "user")
    assert_one_line_error(result, f"--model {not_a_model}: the model is neither a scikit-learn classifier nor a regressor")


def test_python_dash_m_service_in_a_real_process(root, demo_root):
    flip_byte(root / "breast-cancer" / "1" / "model.joblib")
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_SIGNING_KEY", "ARTIFACTS_DIR")}
    env["ARTIFACTS_DIR"] = str(root)  # the variable the contract documents
    completed = subprocess.run([sys.executable, "-m", "service", "verify"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert completed.stdout == ("FAILED  breast-cancer 1: file model.joblib does not match its sha256 in the manifest\n"
                                "ok      diabetes 1\n")
    assert completed.stderr == "Error: 1 version(s) failed verification\n"


def test_report_refuses_both_window_and_minutes(runner, root, demo_root):
    result = runner.invoke(cli, ["report", "diabetes", "--window", "100", "--minutes", "5", "--artifacts-dir", str(root),
                                 "--database-url", f"sqlite:///{root.parent / 'db.sqlite'}"])
    assert result.exit_code == 2 and "give --window (predictions) or --minutes, not both" in result.output


def test_config_checks_and_prints_the_environment_hiding_secrets(runner, monkeypatch):
    monkeypatch.setenv("PII_HASH_KEY", "very-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db.internal/predictions")
    result = runner.invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "PII_HASH_KEY             (set)" in result.stdout and "very-secret" not in result.stdout
    assert "DATABASE_URL             postgresql://..." in result.stdout and "pw" not in result.stdout
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    bad = runner.invoke(cli, ["config", "--quiet"])
    assert bad.exit_code == 1
    assert bad.stderr == "Error: configuration error: WEB_CONCURRENCY='many' is invalid: expected a whole number\n"
