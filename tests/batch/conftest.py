"""A model with text codes, a nullable float, a boolean and a required integer, beside the demo models;
the app over them (for the API's answers) and ``score``, the command run with the app's settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.cli import cli
from service.config import Config
from service.models import registry
from service.models.packaging import package_model
from tests.conftest import SCRUBBED_ENV

CODES = ["01", "02", "10"]


def codes_model(root: Path) -> dict:
    """Package ``codes``: category codes with a leading zero, a nullable float, a bool and a required int."""
    rng = np.random.default_rng(0)
    n = 80
    X = pd.DataFrame({"code": rng.choice(CODES, n), "x": rng.normal(size=n), "flag": rng.integers(0, 2, n) == 1,
                      "n": rng.integers(0, 5, n)})
    y = ((X["code"] == "01") ^ (X["x"] > 0)).astype(int)
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["code"]),
                                                  (SimpleImputer(), ["x"]), remainder="passthrough"),
                          LogisticRegression())
    manifest = package_model(model.fit(X, y), "codes", root, X, y, overrides={"x": {"nullable": True}})
    registry.record_packaged(root, manifest, actor="test")
    return manifest


@dataclass
class Batch:
    root: Path
    client: FlaskClient
    database_url: str
    runner: CliRunner

    def score(self, *args: str | Path) -> Result:
        return self.runner.invoke(cli, ["score", *map(str, args)])

    def api(self, model: str, instances: list, **parameters: object) -> tuple[int, dict]:
        body = {"instances": instances, **({"parameters": parameters} if parameters else {})}
        answer = self.client.post(f"/v1/models/{model}:predict", json=body)
        return answer.status_code, answer.get_json()


@pytest.fixture
def batch(artifact_root: Path, make_app: Callable) -> Batch:
    codes_model(artifact_root)
    app = make_app()
    config: Config = app.config["SERVICE_CONFIG"]
    runner = CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(config.artifacts_dir),
                            "DATABASE_URL": config.database_url})
    return Batch(artifact_root, app.test_client(), config.database_url, runner)


def summary(result: Result) -> dict:
    """The command's one JSON line on stdout."""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.output
    return json.loads(lines[0])


def rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
