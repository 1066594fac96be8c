import json

import numpy as np
import pandas as pd
import pytest

from service.models import pii
from service.models.profile import MIN_GROUP, NUMERIC_BINS, profile_column, profile_frame, profile_predictions


def test_numeric_bins_and_frequencies_sum_to_one():
    values = pd.Series(np.arange(100, dtype=float))
    profile = profile_column(values, "float")
    assert profile["kind"] == "numeric"
    assert profile["count"] == 100 and profile["missing_rate"] == 0.0
    assert len(profile["bin_edges"]) == NUMERIC_BINS + 1
    assert len(profile["frequencies"]) == NUMERIC_BINS
    assert sum(profile["frequencies"]) == pytest.approx(1.0)
    assert profile["frequencies"] == pytest.approx([0.1] * NUMERIC_BINS)
    assert profile["bin_edges"][0] == 0.0 and profile["bin_edges"][-1] == 99.0
    assert (profile["min"], profile["max"], profile["mean"]) == (0.0, 99.0, 49.5)
    assert profile["std"] == pytest.approx(np.std(np.arange(100), ddof=1))
    assert profile["quantiles"]["0.5"] == 49.5
    json.dumps(profile)


def test_skewed_numbers_still_sum_to_one():
    values = pd.Series([0] * 90 + list(range(1, 11)), dtype="int64")
    profile = profile_column(values, "int")
    assert sum(profile["frequencies"]) == pytest.approx(1.0)
    assert len(profile["frequencies"]) == len(profile["bin_edges"]) - 1
    assert profile["bin_edges"] == sorted(set(profile["bin_edges"]))  # repeated quantiles merged
    assert profile["frequencies"][0] == pytest.approx(0.9)


def test_a_constant_column_has_one_bin():
    profile = profile_column(pd.Series([3.0, 3.0, 3.0]), "float")
    assert profile["bin_edges"] == [3.0]
    assert profile["frequencies"] == [1.0]
    assert profile["std"] == 0.0


def test_missing_rate_counts_nan_and_profiles_only_present_values():
    values = pd.Series([1.0, np.nan, 3.0, np.nan])
    profile = profile_column(values, "float")
    assert profile["count"] == 4
    assert profile["missing_rate"] == 0.5
    assert (profile["min"], profile["max"]) == (1.0, 3.0)
    assert sum(profile["frequencies"]) == pytest.approx(1.0)


def test_categorical_frequencies():
    values = pd.Series(["a", "b", "a", "c", None, "a", "b", "a"])
    profile = profile_column(values, "category")
    assert profile["kind"] == "categorical"
    assert profile["missing_rate"] == 1 / 8
    assert profile["categories"] == pytest.approx({"a": 4 / 7, "b": 2 / 7, "c": 1 / 7})
    assert profile["other_rate"] == 0.0
    assert sum(profile["categories"].values()) == pytest.approx(1.0)


def test_bool_and_numeric_categories_get_readable_string_keys():
    assert profile_column(pd.Series([True, False, True, True]), "bool")["categories"] == {"true": 0.75, "false": 0.25}
    assert profile_column(pd.Series([1, 2, 2, 2], dtype="int64"), "category")["categories"] == {"2": 0.75, "1": 0.25}


def test_more_than_fifty_categories_are_cut_with_an_other_rate():
    values = pd.Series(["common"] * 50 + [f"rare-{i}" for i in range(60)])
    profile = profile_column(values, "string")
    assert len(profile["categories"]) == 50
    assert profile["categories"]["common"] == pytest.approx(50 / 110)
    assert profile["other_rate"] == pytest.approx(11 / 110)
    assert sum(profile["categories"].values()) + profile["other_rate"] == pytest.approx(1.0)


def test_an_all_missing_column_is_empty():
    profile = profile_column(pd.Series([np.nan, np.nan]), "float")
    assert profile == {"count": 2, "missing_rate": 1.0, "kind": "empty"}


def test_profile_frame_covers_every_feature():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["u", "v", "u"], "unused": [0, 0, 0]})
    profile = profile_frame(frame, [{"name": "x", "type": "float"}, {"name": "c", "type": "category"}])
    assert list(profile) == ["x", "c"]
    assert profile["x"]["kind"] == "numeric" and profile["c"]["kind"] == "categorical"


def test_classification_predictions_are_class_shares():
    profile = profile_predictions(np.array([0, 1, 1, 1]), "classification")
    assert profile["kind"] == "categorical"
    assert profile["categories"] == {"1": 0.75, "0": 0.25}


def test_regression_predictions_are_binned():
    profile = profile_predictions(np.linspace(0.0, 10.0, 50), "regression")
    assert profile["kind"] == "numeric"
    assert sum(profile["frequencies"]) == pytest.approx(1.0)
    assert (profile["min"], profile["max"]) == (0.0, 10.0)


def test_a_pii_number_keeps_rounded_bins_of_at_least_five_rows_and_nothing_else():
    salaries = pd.Series(np.random.default_rng(0).normal(52000, 9000, 1000).round(2))
    profile = profile_column(salaries, "float", salt="00" * 16)
    assert set(profile) == {"count", "missing_rate", "pii", "kind", "bin_edges", "frequencies"}
    edges = profile["bin_edges"]
    assert not set(edges) & set(salaries.tolist())
    assert all(float(f"{e:.2g}") == e for e in edges)  # two significant figures
    assert salaries.min() < edges[0] and edges[-1] < salaries.max()  # the extremes do not show
    counts = [round(f * len(salaries)) for f in profile["frequencies"]]
    assert sum(counts) == len(salaries) and min(counts) >= MIN_GROUP


def test_a_sparse_pii_bin_joins_its_neighbour_and_a_tiny_column_keeps_one_bin():
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 1000.0])
    profile = profile_column(values, "float", salt="00" * 16)
    counts = [round(f * len(values)) for f in profile["frequencies"]]
    assert min(counts) >= MIN_GROUP and 1000.0 not in profile["bin_edges"]
    assert profile_column(pd.Series([3.0, 4.0]), "float", salt="00" * 16)["bin_edges"] == []


def test_pii_categories_are_keyed_by_salted_hash_and_rare_ones_count_as_other():
    values = pd.Series(["ana@example.com"] * 6 + ["bo@example.com"] * 5 + ["eve@example.com"], dtype=object)
    profile = profile_column(values, "category", salt="00" * 16)
    assert "example.com" not in json.dumps(profile)
    assert profile["categories"] == pytest.approx({pii.profile_key("00" * 16, "ana@example.com"): 6 / 12,
                                                   pii.profile_key("00" * 16, "bo@example.com"): 5 / 12})
    assert profile["other_rate"] == pytest.approx(1 / 12) and profile["salt"] == "00" * 16


def test_profile_frame_hashes_only_pii_features_with_the_salt_given():
    frame = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "a"]})
    profile = profile_frame(frame, [{"name": "x", "type": "float"}, {"name": "c", "type": "category", "pii": True}],
                            "ab" * 16)
    assert "sample" in profile["x"] and profile["c"]["salt"] == "ab" * 16
