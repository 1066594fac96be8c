"""``package --cv K --train``, gates on cross-validated means, and one-line errors naming the culprit."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from service.cli import cli
from service.models import artifacts


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"x": rng.normal(size=200), "z": rng.normal(size=200)})
    frame["label"] = np.where(frame["x"] + 0.3 * rng.normal(size=200) > 0, "pos", "neg")
    frame.iloc[:150].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[150:].to_csv(tmp_path / "holdout.csv", index=False)
    model = LogisticRegression().fit(frame.iloc[:150][["x", "z"]], frame.iloc[:150]["label"])
    joblib.dump(model, tmp_path / "model.joblib")
    return tmp_path


def run(files, *extra, model="model.joblib"):
    runner = CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None, "REQUIRE_MODEL_CARD": None})
    return runner.invoke(cli, ["package", "--model", str(files / model), "--name", "m", "--data",
                               str(files / "holdout.csv"), "--target", "label",
                               "--artifacts-dir", str(files / "artifacts"), *extra])


def one_line(result, text):
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output, result.stderr
    assert text in result.stderr


def test_cv_refits_clones_and_gates_on_the_mean(files):
    result = run(files, "--cv", "5", "--train", str(files / "train.csv"), "--min", "cv.accuracy=0.7", "--min",
                 "accuracy=0.7")
    assert result.exit_code == 0, result.output
    manifest = artifacts.read_manifest(artifacts.version_dir(files / "artifacts", "m", 1))
    cv = manifest["metrics"]["cv"]
    assert cv["folds"] == 5 and cv["rows"] == 150 and 0.7 <= cv["accuracy"]["mean"] <= 1 and cv["accuracy"]["std"] >= 0
    assert manifest["metrics"]["averaging"] == {
        "average": "binary", "pos_label": "pos",
        "note": "precision/recall/f1 treat 'pos' (the second of model.classes_) as positive"}
    assert "cross-validation (5 folds): accuracy=" in result.stderr
    refused = run(files, "--cv", "5", "--train", str(files / "train.csv"), "--min", "cv.accuracy=0.999")
    one_line(refused, "quality gate failed: cv.accuracy = ")


def test_cv_without_train_names_the_option(files):
    one_line(run(files, "--cv", "3"), "--cv needs --train")


def test_a_non_joblib_model_names_the_file(files):
    (files / "notes.txt").write_text("not a pickle")
    one_line(run(files, model="notes.txt"), f"--model {files / 'notes.txt'} is not a joblib file")


def test_bad_schema_json_names_the_file_line_and_column(files):
    (files / "schema.json").write_text('{"x": {"type": }}')  # not a trailing comma: 3.13 places that error otherwise
    one_line(run(files, "--schema", str(files / "schema.json")),
             f"--schema {files / 'schema.json'}: not valid JSON at line 1 column 16")


def test_a_schema_type_the_csv_cannot_hold_names_file_and_column(files):
    (files / "schema.json").write_text('{"label": {"type": "int"}, "x": {"type": "int"}}')
    one_line(run(files, "--schema", str(files / "schema.json")),
             f"--data {files / 'holdout.csv'}: column 'label' cannot be read as Int64: ")


def test_a_target_with_missing_values_names_the_file(files):
    frame = pd.read_csv(files / "holdout.csv")
    frame.loc[3, "label"] = None
    frame.to_csv(files / "holdout.csv", index=False)
    one_line(run(files), f"--target 'label' has missing values in --data {files / 'holdout.csv'}")
