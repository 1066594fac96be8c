"""Reference rows for a model whose manifest keeps personal data only as rounded bins and hashes."""

from __future__ import annotations

import joblib
import numpy as np

from service.explain.background import reference_rows
from service.models import artifacts
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
