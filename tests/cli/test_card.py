"""``python -m service card`` and ``package --card`` / ``REQUIRE_MODEL_CARD``."""

from __future__ import annotations

from click.testing import CliRunner

from service.cli import cli
from tests.cli.test_cli import assert_one_line_error, package_args, user_model  # noqa: F401 (fixture)


def invoke(root, tmp_path, *args, **env):
    runner = CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None, "REQUIRE_MODEL_CARD": None, **env})
    return runner.invoke(cli, [*args, "--artifacts-dir", str(root)]
                         + (["--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}"] if args[0] == "card" else []))


def test_card_text_given_at_packaging_is_printed_by_card(tmp_path, user_model):  # noqa: F811
    root = tmp_path / "artifacts"
    text = tmp_path / "card.md"
    text.write_text("Intended use: a test model.\nLimitations: ten rows of data.\n", encoding="utf-8")
    assert invoke(root, tmp_path, *package_args(user_model, "--name", "user", "--card", str(text))).exit_code == 0
    assert invoke(root, tmp_path, *package_args(user_model, "--name", "user", "--changelog", "again")).exit_code == 0
    first = invoke(root, tmp_path, "card", "user")  # production: version 1
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("# Model card: user version 1\n")
    assert "Limitations: ten rows of data." in first.stdout and "| x | float |" in first.stdout
    second = invoke(root, tmp_path, "card", "user", "2")
    assert "_No card text was given at packaging" in second.stdout
    assert "Parent: version 1. Changelog: again" in second.stdout


def test_require_model_card_refuses_packaging_without_one(tmp_path, user_model):  # noqa: F811
    root = tmp_path / "artifacts"
    result = invoke(root, tmp_path, *package_args(user_model, "--name", "user"), REQUIRE_MODEL_CARD="1")
    assert_one_line_error(result, "a model card is required (REQUIRE_MODEL_CARD): give its text with --card card.md")
    assert not (root / "user").exists()


def test_card_of_an_unknown_version_fails_in_one_line(tmp_path, user_model):  # noqa: F811
    root = tmp_path / "artifacts"
    invoke(root, tmp_path, *package_args(user_model, "--name", "user"))
    assert_one_line_error(invoke(root, tmp_path, "card", "user", "7"), "No such model version.")


def test_a_card_names_the_hold_out_as_such_and_training_data_only_when_given(tmp_path, user_model):  # noqa: F811
    root = tmp_path / "artifacts"
    _, data, _ = user_model
    assert invoke(root, tmp_path, *package_args(user_model, "--name", "user")).exit_code == 0
    assert invoke(root, tmp_path, *package_args(user_model, "--name", "user", "--train", str(data))).exit_code == 0
    without = invoke(root, tmp_path, "card", "user", "1").stdout
    assert "- **Training data:** not recorded (packaged without --train or --reference)" in without
    assert f"- **Hold-out (evaluation) data:** {data}, sha256 `" in without
    assert "rows of the hold-out (evaluation) data" in without
    assert f"source={data}" not in without
    given = invoke(root, tmp_path, "card", "user", "2").stdout
    assert f"- **Training data:** source={data}" in given and "rows of the training data" in given
