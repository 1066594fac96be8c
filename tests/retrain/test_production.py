"""Reading the labelled production rows back from a real prediction log (SQLite, then PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest

from service.monitoring.predlog import PredictionLog
from service.retrain import production
from service.store import Store

FEATURES = [
    {"name": "x", "type": "float", "required": True, "nullable": False},
    {"name": "note", "type": "float", "required": False, "nullable": True},
]
CLASSES = [0, 1]


@pytest.fixture
def store(make_store) -> Store:
    return make_store("log")


def log_batch(plog: PredictionLog, base: str, xs: list[float], ts: float, features=FEATURES, **columns) -> list[str]:
    ids = [f"{base}-{i}" for i in range(len(xs))]
    values = {"x": np.array(xs, dtype=float), "note": np.full(len(xs), np.nan), **columns}
    assert plog.record("m", 1, base, ids, values, np.zeros(len(xs), dtype=int), None, 1.0, features, now=ts)
    return ids


def test_labelled_rows_come_back_oldest_first_with_their_labels(store):
    plog = PredictionLog(store)
    first = log_batch(plog, "aaaa", [1.0, 2.0, 3.0], ts=100.0)
    second = log_batch(plog, "bbbb", [4.0, 5.0], ts=200.0)
    result = plog.record_feedback("m", [{"id": first[0], "label": 1}, {"id": first[2], "label": "0"},
                                        {"id": second[1], "label": 1.0}])
    assert result["accepted"] == 3
    found = production.read(store, "m", FEATURES, "classification", CLASSES, since=0, max_rows=100)
    assert found.X["x"].tolist() == [1.0, 3.0, 5.0]
    assert found.y.tolist() == [1, 0, 1] and found.y.dtype.kind == "i"  # "0" and 1.0 found the classes
    assert found.ts.tolist() == [100.0, 100.0, 200.0]
    assert found.ids == [first[0], first[2], second[1]]
    assert found.scanned == 5 and not found.capped
    assert found.left_out == {"inputs_not_stored": 0, "unknown_label": 0}
    print_ = found.fingerprint()
    assert print_["rows"] == 3 and print_["first_ts"] == 100.0 and print_["last_ts"] == 200.0


def test_the_window_the_cap_and_unknown_labels(store):
    plog = PredictionLog(store)
    old = log_batch(plog, "cccc", [1.0], ts=50.0)
    new = log_batch(plog, "dddd", [2.0, 3.0, 4.0], ts=500.0)
    plog.record_feedback("m", [{"id": old[0], "label": 1}, {"id": new[0], "label": 1}, {"id": new[1], "label": "maybe"},
                               {"id": new[2], "label": 0}])
    found = production.read(store, "m", FEATURES, "classification", CLASSES, since=100.0, max_rows=100)
    assert found.X["x"].tolist() == [2.0, 4.0]  # the older batch is outside the window
    assert found.left_out["unknown_label"] == 1
    capped = production.read(store, "m", FEATURES, "classification", CLASSES, since=0, max_rows=1)
    assert len(capped.X) == 1 and capped.capped


def test_rows_whose_inputs_the_log_did_not_store_are_counted_and_left_out(store):
    features = [{"name": "x", "type": "float", "required": True, "nullable": False},
                {"name": "customer", "type": "float", "required": True, "nullable": False, "pii": True}]
    plog = PredictionLog(store)  # no PII_HASH_KEY: a pii feature is dropped from the log
    ids = log_batch(plog, "eeee", [1.0, 2.0], ts=10.0, features=features, customer=np.array([7.0, 8.0]))
    plog.record_feedback("m", [{"id": i, "label": 1} for i in ids])
    found = production.read(store, "m", features, "classification", CLASSES, since=0, max_rows=100)
    assert len(found.X) == 0
    assert found.left_out["inputs_not_stored"] == 2 and found.unstored == ["customer"]


def test_an_optional_pii_feature_still_leaves_its_rows_out(store):
    features = [FEATURES[0], {"name": "email", "type": "string", "required": False, "nullable": True, "pii": True}]
    plog = PredictionLog(store, pii_key=b"k" * 32)  # hashed, not raw: no model input to learn from
    ids = log_batch(plog, "acac", [1.0], ts=10.0, features=features, email=np.array(["a@b.c"], dtype=object))
    plog.record_feedback("m", [{"id": ids[0], "label": 1}])
    found = production.read(store, "m", features, "classification", CLASSES, since=0, max_rows=100)
    assert len(found.X) == 0 and found.left_out["inputs_not_stored"] == 1 and found.unstored == ["email"]


def test_pages_bound_what_is_read_at_once(store, monkeypatch):
    monkeypatch.setattr(production, "PAGE_ROWS", 2)
    monkeypatch.setattr(production, "PAGE", 2)
    plog = PredictionLog(store)
    labelled = []
    for k in range(5):
        ids = log_batch(plog, f"ff{k:02d}", [float(k), float(k) + 0.5], ts=100.0 + k)
        labelled.append({"id": ids[1], "label": k % 2})
    plog.record_feedback("m", labelled)
    found = production.read(store, "m", FEATURES, "classification", CLASSES, since=0, max_rows=100)
    assert found.X["x"].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5] and found.scanned == 10
    assert found.y.tolist() == [0, 1, 0, 1, 0]


def test_a_regressor_gets_numbers_and_skips_what_is_not_one(store):
    plog = PredictionLog(store)
    ids = log_batch(plog, "abab", [1.0, 2.0, 3.0], ts=10.0)
    plog.record_feedback("m", [{"id": ids[0], "label": 12.5}, {"id": ids[1], "label": "n/a"}, {"id": ids[2], "label": "3"}])
    found = production.read(store, "m", FEATURES, "regression", None, since=0, max_rows=100)
    assert found.y.tolist() == [12.5, 3.0] and found.left_out["unknown_label"] == 1
