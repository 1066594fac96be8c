"""The report's KS tests give scipy's ``ks_2samp(method="asymp")`` figures, whatever the samples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from service.monitoring import ks
from service.monitoring.drift import drift_report


def cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Continuous, heavily tied, tiny, constant, shifted and unequal-size sample pairs."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(150):
        n, m = (int(x) for x in rng.choice([1, 2, 3, 5, 17, 100, 499, 500, 1000, 4000], size=2))
        kind = rng.integers(0, 5)
        if kind == 0:  # continuous, maybe shifted
            a, b = rng.normal(rng.normal(0, 0.3), 1, n), rng.normal(0, 1, m)
        elif kind == 1:  # many ties: a few whole numbers
            a, b = rng.integers(0, 4, n).astype(float), rng.integers(0, 5, m).astype(float)
        elif kind == 2:  # constant columns, equal or not
            a, b = np.full(n, 3.0), np.full(m, float(rng.choice([3.0, 4.0])))
        elif kind == 3:  # one side constant inside the other's range
            a, b = np.full(n, 0.5), rng.uniform(0, 1, m)
        else:  # values drawn from the reference itself (ties across the two samples)
            b = rng.normal(0, 1, m)
            a = rng.choice(b, n)
        out.append((a, b))
    return out


def test_statistic_and_p_value_equal_scipy_over_many_samples():
    pairs = cases()
    found = ks.two_sample([a for a, _ in pairs], [ks.sorted_sample(b.tolist()) for _, b in pairs])
    assert len(found) == len(pairs)
    for (a, b), (d, p) in zip(pairs, found, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns for one value on each side
            expected = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(float(expected.statistic), abs=1e-12, rel=0)
        assert p == pytest.approx(float(expected.pvalue), abs=1e-12, rel=0, nan_ok=True)
    assert any(len(a) == len(b) == 1 for a, b in pairs)  # the case whose p-value is nan was tried


def test_each_pair_alone_gives_what_it_gives_among_others():
    pairs = cases()[:20]
    together = ks.two_sample([a for a, _ in pairs], [np.sort(b) for _, b in pairs])
    alone = [ks.two_sample([a], [np.sort(b)])[0] for a, b in pairs]
    assert together == alone
    assert ks.two_sample([], []) == []


def test_a_sample_is_sorted_once_per_profile_list():
    sample = [3.0, 1.0, 2.0]
    first = ks.sorted_sample(sample)
    assert first.tolist() == [1.0, 2.0, 3.0] and not first.flags.writeable
    assert ks.sorted_sample(sample) is first
    assert ks.sorted_sample(list(sample)) is not first  # another list: its own entry


def test_drift_report_figures_equal_scipy_for_every_numeric_feature():
    rng = np.random.default_rng(3)
    features = [{"name": f"x{i}", "type": "float"} for i in range(6)]
    profile = {"features": {}, "prediction": {"kind": "empty"}}
    columns = {}
    for i, feature in enumerate(features):
        sample = np.round(rng.normal(0, 1, 300), 1 if i % 2 else 3)
        profile["features"][feature["name"]] = {"kind": "numeric", "bin_edges": [-1.0, 0.0, 1.0],
                                                "frequencies": [0.5, 0.5], "sample": sample.tolist()}
        column = rng.normal(0.1 * i, 1, 500)
        column[rng.integers(0, 500, 20)] = np.nan  # missing values are left out of the test
        columns[feature["name"]] = column
    report = drift_report(profile, features, columns, np.zeros(500), "regression")
    for feature in features:
        name = feature["name"]
        column = columns[name]
        expected = stats.ks_2samp(column[~np.isnan(column)], profile["features"][name]["sample"], method="asymp")
        entry = report["features"][name]
        assert entry["n"] == int((~np.isnan(column)).sum())
        assert entry["ks_statistic"] == pytest.approx(float(expected.statistic), abs=1e-12, rel=0)
        assert entry["ks_pvalue"] == pytest.approx(float(expected.pvalue), abs=1e-12, rel=0)
