"""Rows drawn from a model's reference profile validate against that model's schema."""

import shutil

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from bench import profiled
from bench.__main__ import build_parser
from bench.workload import request_body
from service.models import registry
from service.models.packaging import package_model
from service.protocols import v1
from service.serving.inference import Target
from service.serving.validation import validate_rows


def validates(manifest, frame):
    """The v1 body of ``frame`` passes decode and validation, and keeps every row."""
    request = v1.decode(orjson.loads(request_body(frame)), Target(manifest["name"]), max_rows=100_000)
    batch = validate_rows(request.layout, request.data, manifest["input"]["features"], vectorized_min_rows=64)
    assert batch.n_rows == len(frame)
    return batch


@pytest.fixture
def mixed(tmp_path):
    """A packaged model with float, int, bool and string features (one-hot on the string)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200), "count": rng.integers(0, 9, 200), "flag": rng.integers(0, 2, 200) == 1,
                      "city": rng.choice(["paris", "lyon", "nice"], 200)})
    y = (X["x"] > 0).astype(int)
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                  remainder="passthrough"), LogisticRegression())
    model.fit(X, y)
    manifest = package_model(model, "mixed", tmp_path / "source", X, y, reference=X)
    registry.record_packaged(tmp_path / "source", manifest, actor="test")
    return tmp_path / "source", manifest


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
def test_rows_from_a_demo_profile_validate(demo_root, name):
    manifest = profiled.manifest_of(demo_root, name, 1)
    frame = profiled.profile_rows(manifest, 500)
    assert list(frame.columns) == [f["name"] for f in manifest["input"]["features"]]
    validates(manifest, frame)


def test_rows_of_every_kind_validate_and_follow_the_shares(mixed):
    _, manifest = mixed
    frame = profiled.profile_rows(manifest, 2000)
    validates(manifest, frame)
    assert set(frame["city"]) == {"paris", "lyon", "nice"}
    assert frame["count"].dtype == np.int64 and frame["count"].between(0, 8).all()
    assert set(frame["flag"]) == {True, False}
    assert profiled.profile_rows(manifest, 50).equals(profiled.profile_rows(manifest, 50))  # same bytes every run


def test_without_raw_samples_rows_come_from_the_bins_inside_the_schema(demo_root):
    manifest = profiled.manifest_of(demo_root, "diabetes", 1)
    for profile in manifest["reference_profile"]["features"].values():
        profile.pop("sample", None)
    frame = profiled.profile_rows(manifest, 500)
    validates(manifest, frame)
    bmi = manifest["reference_profile"]["features"]["bmi"]["bin_edges"]
    assert frame["bmi"].between(bmi[0], bmi[-1]).all()


def test_a_model_is_copied_and_its_production_version_measured(mixed, tmp_path):
    source, _ = mixed
    shutil.copytree(source / "mixed" / "1", source / "mixed" / "2")  # a newer version production does not serve
    version = profiled.copy_model(source, "mixed", tmp_path / "bench")
    assert version == 1
    scenarios = profiled.scenarios_for(tmp_path / "bench", "mixed", version)
    assert [(s.rows, s.path) for s in scenarios] == [(n, "/v1/models/mixed/versions/1:predict") for n in (1, 100, 10_000)]


def test_the_copy_keeps_labels_and_rollout_not_the_history(demo_root, tmp_path):
    """The real registry's history names records of its audit trail, which the bench's own stores
    would refuse as not adopted: the copy carries the labels and rollout only."""
    source, copy = tmp_path / "real", tmp_path / "bench"
    shutil.copytree(demo_root, source)
    state = orjson.loads((source / "diabetes" / "registry.json").read_bytes())
    state["history"][0]["audit"] = "ab" * 32  # as the CLI leaves it: a record of its store
    (source / "diabetes" / "registry.json").write_bytes(orjson.dumps(state))

    assert profiled.copy_model(source, "diabetes", copy) == 1
    copied = registry.read_state(copy, "diabetes")
    assert copied["labels"] == {"production": 1} and copied["rollout"] == state["rollout"]
    assert copied["history"] == [] and not (copy / "diabetes" / ".registry.last-good.json").exists()


def test_a_model_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(profiled.ModelNotFound, match="no packaged model 'nope'"):
        profiled.copy_model(tmp_path, "nope", tmp_path / "bench")


def test_a_manifest_without_a_profile_is_refused():
    with pytest.raises(profiled.ModelNotFound, match="no reference_profile"):
        profiled.profile_rows({"name": "m", "version": 1, "input": {"features": []}}, 3)


def test_the_model_option_parses():
    assert build_parser().parse_args(["--model", "churn", "--quick"]).model == "churn"
    assert build_parser().parse_args([]).model is None
