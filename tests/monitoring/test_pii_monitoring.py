"""Drift and data quality of personal-data features, with only what their profile keeps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from service.models import pii
from service.models.profile import profile_column
from service.monitoring.drift import INSUFFICIENT, PII_REASON, drift_report
from service.monitoring.quality import request_quality, window_quality

SALT = "cd" * 16
RNG = np.random.default_rng(5)
EMAILS = [f"p{i}@example.com" for i in range(10)]
SALARIES = RNG.normal(50000, 8000, 2000).round(2)
PEOPLE = RNG.choice(EMAILS, 2000)
FEATURES = [{"name": "salary", "type": "float", "pii": True},
            {"name": "email", "type": "category", "pii": True, pii.HASHED: pii.hash_categories(SALT, EMAILS)}]
PROFILE = {"features": {"salary": profile_column(pd.Series(SALARIES), "float", salt=SALT),
                        "email": profile_column(pd.Series(PEOPLE, dtype=object), "category", salt=SALT)},
           "prediction": {"kind": "empty"}}


def report(salary, email):
    columns = {"salary": np.asarray(salary, dtype=float), "email": np.asarray(email, dtype=object)}
    return drift_report(PROFILE, FEATURES, columns, np.zeros(len(salary)), "regression")


def test_raw_live_values_drift_by_psi_on_rounded_bins_and_hashed_categories():
    same = report(RNG.normal(50000, 8000, 1000), RNG.choice(EMAILS, 1000))["features"]
    moved = report(RNG.normal(65000, 8000, 1000), RNG.choice(EMAILS[:2], 1000))["features"]
    assert same["salary"]["status"] == same["email"]["status"] == "ok"
    assert moved["salary"]["status"] == "alert" and moved["salary"]["ks_statistic"] is None  # no sample kept
    assert moved["email"]["status"] == "alert" and moved["email"]["psi"] > 1
    text = json.dumps(moved)
    assert "example.com" not in text and "sha256:" not in text and "edges" not in text


def test_a_window_from_the_log_has_no_raw_values_and_says_why():
    found = report([np.nan] * 200, [None] * 200)
    assert {name: (e["status"], e["reason"]) for name, e in found["features"].items()} == {
        "salary": (INSUFFICIENT, PII_REASON), "email": (INSUFFICIENT, PII_REASON)}
    assert found["thresholds"]["tests"] == 1  # features that cannot test do not dilute alpha
    left_out = drift_report(PROFILE, [], {}, np.zeros(3), "regression")
    assert set(left_out["features"]) == {"salary", "email"}


def test_quality_hashes_live_values_to_count_unseen_and_shows_no_range():
    email = np.array(["p1@example.com"] * 90 + ["eve@example.org"] * 30, dtype=object)
    columns = {"salary": np.full(120, 1.0e9), "email": email}
    checked = window_quality(PROFILE, FEATURES, columns)["features"]
    assert checked["email"]["unseen"] == 30 and checked["email"]["unseen_status"] == "alert"
    assert "range" not in checked["salary"] and checked["salary"]["out_of_range"] == 0
    by_schema = request_quality(FEATURES, columns)["features"]  # no profile: the schema's hashes
    assert by_schema["email"]["unseen"] == 30
    assert "example" not in json.dumps(checked) + json.dumps(by_schema)
