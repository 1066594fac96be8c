"""``label set --force`` moves a label to a version that changes meaning; without it, one line."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner
from sklearn.linear_model import LinearRegression, LogisticRegression

from service.cli import cli
from service.models import registry
from service.models.packaging import package_model

X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})


def test_label_set_needs_force_for_a_breaking_version(tmp_path):
    root = tmp_path / "artifacts"
    registry.record_packaged(root, package_model(LinearRegression().fit(X, X["a"]), "m", root, X, X["a"]), actor="t")
    y = pd.Series([0, 0, 0, 1, 1, 1])
    registry.record_packaged(root, package_model(LogisticRegression().fit(X, y), "m", root, X, y, breaking=True),
                             actor="t")
    runner = CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None})
    args = ["label", "set", "m", "production", "2", "--artifacts-dir", str(root)]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "give --force" in refused.stderr
    moved = runner.invoke(cli, [*args, "--force", "--reason", "new target"])
    assert moved.exit_code == 0, moved.output
    last = registry.read_state(root, "m")["history"][-1]
    assert last["forced"] is True and last["reason"] == "new target" and "task regression -> classification" in last["breaking"]
