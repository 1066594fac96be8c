"""A label moves to a version that changes meaning only when forced, and the history says why."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from service.models import registry
from service.models.packaging import package_model

X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})


@pytest.fixture
def root(tmp_path):
    """Model "m": version 1 a regressor (production), version 2 a classifier packaged with breaking=True."""
    root = tmp_path / "artifacts"
    first = package_model(LinearRegression().fit(X, X["a"] * 2), "m", root, X, X["a"] * 2)
    registry.record_packaged(root, first, actor="test")
    y = pd.Series(["no", "no", "no", "yes", "yes", "yes"])
    with pytest.raises(ValueError, match=r"task regression -> classification.*give --breaking"):
        package_model(LogisticRegression().fit(X, y), "m", root, X, y)
    second = package_model(LogisticRegression().fit(X, y), "m", root, X, y, breaking=True)
    assert second["compatibility"]["breaking"] == ["task regression -> classification", "classes added: no, yes"]
    registry.record_packaged(root, second, actor="test")
    return root


def test_a_breaking_move_is_refused_without_force(root):
    with pytest.raises(ValueError, match=r"changes meaning against production version 1 .*give --force"):
        registry.set_label(root, "m", "production", 2, actor="test")
    assert registry.read_state(root, "m")["labels"]["production"] == 1


def test_a_forced_move_records_why(root):
    entry = registry.set_label(root, "m", "production", 2, actor="test", reason="new target", force=True)
    assert entry["forced"] is True and entry["breaking"][0] == "task regression -> classification"
    assert registry.read_state(root, "m")["history"][-1]["breaking"] == entry["breaking"]


def test_a_label_on_no_version_or_an_equal_one_needs_no_force(root):
    entry = registry.set_label(root, "m", "staging", 2, actor="test")
    assert "forced" not in entry
