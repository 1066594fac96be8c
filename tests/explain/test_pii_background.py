"""Reference rows for a model whose manifest keeps personal data only as rounded bins and hashes."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from service import explain
from service.explain import methods
from service.explain.background import reference_rows
from service.models import artifacts
from tests.explain.helpers import loaded
from tests.security.test_pii import EMAILS, package_people


def test_pii_rows_come_from_the_bins_and_the_encoder_categories_the_profile_hashed(artifact_root, tmp_path):
    assert package_people(artifact_root, tmp_path, "--subject", "email").exit_code == 0
    manifest = artifacts.read_manifest(artifacts.version_dir(artifact_root, "people", 1))
    estimator = joblib.load(tmp_path / "people.joblib")
    rows = reference_rows(manifest, 200, estimator)
    assert rows is not None and set(rows["email"]) <= set(EMAILS) and len(set(rows["email"])) > 10
    edges = manifest["reference_profile"]["features"]["salary"]["bin_edges"]
    assert np.all((rows["salary"] >= edges[0]) & (rows["salary"] <= edges[-1]))
    assert reference_rows(manifest, 5) is None  # without the model nothing can name a hashed category
    again = reference_rows(manifest, 200, estimator)
    assert np.array_equal(again["salary"], rows["salary"]) and list(again["email"]) == list(rows["email"])  # seeded


def test_a_failing_method_does_not_quote_its_exception_when_the_model_reads_personal_data(monkeypatch):
    X = pd.DataFrame({"salary": np.linspace(1000, 9000, 50), "age": np.arange(50.0)})
    secret = "could not convert 'person07.surname@example.com'"

    def broken(model):
        raise ValueError(secret)

    def unsupported(model):
        raise explain.Unsupported("no baseline")

    monkeypatch.setattr(methods, "linear", broken)
    monkeypatch.setattr(methods, "tree", broken)
    monkeypatch.setattr(methods, "sampled", unsupported)
    for overrides, quoted in (({"salary": {"pii": True}}, False), (None, True)):
        model = loaded(LinearRegression(), X, X["age"] * 2, overrides=overrides)
        with pytest.raises(explain.ExplanationUnavailable) as caught:
            explain.method_for(model)
        assert (secret in str(caught.value.details)) is quoted
        assert caught.value.details["reasons"][0].startswith("broken: ValueError")
