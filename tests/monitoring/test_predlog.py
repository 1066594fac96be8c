"""The prediction log on real SQLite files: round trip, privacy, sampling, feedback, windows,
retention, concurrent writers, and failures (full disk, lock, crash) that never raise. The tests
of the ``store`` fixture run on PostgreSQL too (its own failures: test_store_postgres.py)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.monitoring.predlog import PredictionLog, is_sampled
from service.monitoring.privacy import hash_value
from service.monitoring.record_format import pack, unpack
from service.store import RequestRecord, ShadowRecord, Store
from service.store.columns import python_values, read_inputs
from service.store.records import SCHEMA
from tests.builders import logged_ids
from tests.sqlite import connected

REPO = Path(__file__).resolve().parents[2]


def manifest_features(root: Path, name: str) -> list[dict]:
    return json.loads((root / name / "1" / "manifest.json").read_text())["input"]["features"]


def make_columns(features: list[dict], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Values of the right type for each feature, as validation would build them."""
    rng = np.random.default_rng(seed)
    columns = {}
    for f in features:
        if f["type"] == "float":
            columns[f["name"]] = rng.normal(10, 3, n)
        elif f["type"] == "int":
            columns[f["name"]] = rng.integers(0, 100, n)
        else:
            column = np.empty(n, dtype=object)
            column[:] = [f["categories"][i % len(f["categories"])] for i in range(n)] if f.get("categories") \
                else [f"value-{i}" for i in range(n)]
            columns[f["name"]] = column
    return columns


def ids(n: int, base: str = "18c0ffee0000abcdef012345") -> list[str]:
    return [f"{base}-{i}" for i in range(n)]


def stored_inputs(store: Store, prediction_id: str) -> dict:
    """The inputs stored for one prediction: its row of its batch record's columns."""
    base, _, position = prediction_id.rpartition("-")
    ((names, inputs, positions, arrays),) = store.fetch("SELECT features, inputs, positions, arrays FROM prediction_batches"
                                                        " WHERE base = ?", (base,))
    row = int(position) if positions is None else json.loads(positions).index(int(position))
    return {name: python_values(column)[row] for name, column in zip(json.loads(names), read_inputs(inputs, arrays), strict=True)}


def db_bytes(path: Path) -> bytes:
    """Everything SQLite wrote for a database: the file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@pytest.fixture
def store(make_store) -> Store:
    """A store on SQLite, then on PostgreSQL."""
    return make_store("log")


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
def test_record_and_read_back_a_demo_model(demo_root, store, name):
    features = manifest_features(demo_root, name)
    columns = make_columns(features, 50)
    classifier = name == "breast-cancer"
    predictions = np.arange(50) % 2 if classifier else np.linspace(25.0, 300.0, 50)
    probabilities = np.column_stack([np.linspace(0, 1, 50), np.linspace(1, 0, 50)]) if classifier else None
    plog = PredictionLog(store)
    assert plog.record(name, 1, "req-1", ids(50), columns, predictions, probabilities, 3.5, features, now=1000.0)
    window = plog.window(name, 1, features=features)
    assert window.n == 50 and window.redacted == frozenset()
    order = slice(None, None, -1)  # newest first; one batch shares a timestamp, so the last row comes first
    assert window.ids == ids(50)[order]
    for f in features:
        got, sent = window.columns[f["name"]], columns[f["name"]][order]
        if f["type"] in ("float", "int"):
            assert got.dtype == np.float64 and np.array_equal(got, sent.astype(float))
        else:
            assert got.dtype == object and got.tolist() == sent.tolist()
    assert np.array_equal(window.predictions, predictions[order])
    if classifier:
        assert np.array_equal(window.probabilities, probabilities[order])
    else:
        assert window.probabilities is None
    assert window.labels.tolist() == [None] * 50 and np.all(window.ts == 1000.0)
    (batch,) = store.query("SELECT * FROM prediction_batches")  # one record: the inputs once, columnar, in feature order
    assert (batch["request_id"], batch["model"], batch["version"], batch["ts"], batch["latency_ms"], batch["rows"]) \
        == ("req-1", name, 1, 1000.0, 3.5, 50)
    assert (batch["base"], batch["positions"], batch["subjects"]) == (ids(1)[0][:-2], None, None)
    assert json.loads(batch["features"]) == [f["name"] for f in features]
    assert stored_inputs(store, ids(50)[7]) == {f["name"]: columns[f["name"]].tolist()[7] for f in features}


def test_string_classes_and_missing_values(store):
    features = [{"name": "x", "type": "float"}, {"name": "c", "type": "category"}]
    columns = {"x": np.array([1.5, np.nan]), "c": np.array(["a", None], dtype=object)}
    plog = PredictionLog(store)
    assert plog.record("m", 1, None, ["r-0", "r-1"], columns, np.array(["yes", "no"], dtype=object), None, 1, features)
    window = plog.window("m", 1, features=features)
    assert window.predictions.dtype == object and window.predictions.tolist() == ["no", "yes"]
    assert np.isnan(window.columns["x"][0]) and window.columns["x"][1] == 1.5
    assert window.columns["c"].tolist() == [None, "a"]


def test_columns_of_any_layout_round_trip(store):
    """Non-contiguous, float32, bool and sliced-away columns: stored as ``tolist`` would give them."""
    features = [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}, {"name": "f", "type": "bool"},
                {"name": "p", "type": "float"}]
    matrix = np.arange(12.0).reshape(4, 3) / 7  # a column of it is a strided view
    columns = {"a": matrix[:, 1], "b": np.array([0.1, 0.2, np.inf, 0.4], dtype=np.float32),
               "f": np.array([True, False, True, True]), "p": np.ones(4)}
    plog = PredictionLog(store)
    assert plog.record("m", 1, "r", ids(4), columns, np.array([1.5, 2.5, 3.5, 4.5]), np.eye(4)[:, :2], 1, features)
    window = plog.window("m", 1, features=features)
    assert window.columns["a"].tolist() == matrix[::-1, 1].tolist()
    assert window.columns["b"].tolist()[::-1][:2] == np.array([0.1, 0.2], dtype=np.float32).tolist()
    assert np.isnan(window.columns["b"][1])  # inf is not a number JSON keeps: missing, as before
    assert window.columns["f"].tolist() == [True, True, False, True]
    assert window.predictions.tolist() == [4.5, 3.5, 2.5, 1.5]
    assert window.probabilities.tolist() == np.eye(4)[::-1, :2].tolist()


def test_a_validated_float_block_is_stored_as_the_columns_would_be(store, tmp_path):
    """The request's float block (rows = columns) is stored as is: the same record, byte for byte,
    as the columns give; a model with personal data, or a sample, takes the columns' way."""
    from service.serving.validation import validate_rows

    features = [{"name": name, "type": "float"} for name in ("a", "b", "c")]
    data = [[0.5, 1.0, -2.0], [3.25, float(7), 1e-300], [1.0, 2.0, 3.0]]
    batch = validate_rows("rows", data, features, vectorized_min_rows=1)
    assert batch.block is not None and batch.block.shape == (3, 3)
    plog = PredictionLog(store)
    args = ("m", 1, "r", ids(3), batch.columns, np.array([1, 0, 1]), np.eye(3)[:, :2], 1.0, features)
    with_block = plog.encode(*args, ts=5.0, block=batch.block)
    without = plog.encode(*args, ts=5.0)
    assert with_block.arrays == without.arrays and with_block.features == without.features
    assert len(with_block.inputs) < len(without.inputs) / 2  # one descriptor for all the features
    read_back = read_inputs(with_block.inputs, with_block.arrays)
    assert [c.tolist() for c in read_back] == [c.tolist() for c in read_inputs(without.inputs, without.arrays)]
    assert read_back[2].tolist() == [-2.0, 1e-300, 3.0]
    assert read_inputs(with_block.inputs, None) == [None] * 3  # unreadable bytes: each feature missing

    personal = [dict(features[0], pii=True), *features[1:]]
    hashed = PredictionLog(store, pii_key="k").encode("m", 1, "r", ids(3), batch.columns, np.array([1, 0, 1]),
                                                      None, 1.0, personal, ts=5.0, block=batch.block)
    assert orjson.loads(hashed.features) == ["a", "b", "c"]
    assert read_inputs(hashed.inputs, hashed.arrays)[0] == [hash_value(v, b"k") for v in (0.5, 3.25, 1.0)]
    sampled = PredictionLog(Store(tmp_path / "s.sqlite"), sample_rate=0.5)
    kept = sampled.encode(*args, ts=5.0, block=batch.block)
    assert kept == sampled.encode(*args, ts=5.0)  # a sample takes the columns' way

    plog.record(*args, now=6.0)  # the columns' way, then the block's, under other ids: one window reads both
    blocked = plog.encode("m", 1, "r", ids(3, "blk"), *args[4:], ts=7.0, block=batch.block)
    assert plog.store.write("predictions", lambda db: plog.write_encoded(db, blocked))
    window = plog.window("m", 1, features=features)
    assert window.columns["b"].tolist() == [2.0, 7.0, 1.0, 2.0, 7.0, 1.0]  # newest first, rows reversed
    assert window.ids[:3] == ids(3, "blk")[::-1]


def test_a_window_of_block_records_reads_as_the_same_records_stored_by_column(make_store):
    """Records of all-float requests are read as one block per window; the columns equal those of
    the same requests stored feature by feature, with missing (inf) and a mixed window alike."""
    from service.serving.validation import validate_rows

    features = [{"name": name, "type": "float"} for name in ("a", "b", "c")] + [{"name": "s", "type": "string"}]
    floats = features[:3]
    blocks, columns = PredictionLog(make_store("blocks")), PredictionLog(make_store("columns"))
    for k, rows in enumerate([[[1.0, 2.0, 3.0]], [[4.0, float("inf"), 6.0], [7.0, 8.0, 9.0]], [[0.5, 0.25, 1e300]]]):
        batch = validate_rows("rows", [[v if v != float("inf") else 1.0 for v in row] for row in rows], floats,
                              vectorized_min_rows=1)
        if k == 1:
            batch.block[1, 0] = np.inf  # as a stored inf: reads as missing either way
        args = ("m", 1, "r", ids(len(rows), f"b{k}"), batch.columns, np.arange(len(rows)), None, 1.0, floats)
        for plog, block in ((blocks, batch.block), (columns, None)):
            encoded = plog.encode(*args, ts=float(k), block=block)
            assert plog.store.write("predictions", lambda db, p=plog, e=encoded: p.write_encoded(db, e))
    one, other = (plog.window("m", 1, last_n=3, features=features) for plog in (blocks, columns))
    assert one.ids == other.ids and one.ids[0] == ids(1, "b2")[0]
    for name in ("a", "b", "c"):
        assert one.columns[name].dtype == other.columns[name].dtype == np.float64
        np.testing.assert_array_equal(one.columns[name], other.columns[name])
    assert np.isnan(one.columns["b"][2]) and one.columns["b"][1] == 8.0  # the stored inf reads as missing
    assert one.columns["s"].tolist() == other.columns["s"].tolist() == [None] * 3
    mixed = blocks.window("m", 1, features=features)  # with a record by column too: feature by feature
    blocks.record("m", 1, "r", ids(1, "late"), {"a": np.ones(1), "b": np.ones(1), "c": np.ones(1)}, np.zeros(1),
                  None, 1.0, floats, now=9.0)
    assert blocks.window("m", 1, features=features).columns["a"].tolist() == [1.0, *mixed.columns["a"].tolist()]


def test_a_replayed_batch_stays_one_record_and_keeps_its_first_rows(store):
    """A spool may replay a batch after a crash between commit and truncation: the replay inserts nothing."""
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store)
    assert plog.record("m", 1, "r", ids(3), {"x": np.arange(3.0)}, np.zeros(3), None, 1, features, now=10.0)
    assert plog.record("m", 1, "r", ids(3), {"x": np.arange(3.0) + 100}, np.ones(3), None, 1, features, now=20.0)
    batch = plog.encode("m", 1, "r", ids(2, "other"), {"x": np.ones(2)}, np.ones(2), None, 1, features, ts=30.0)
    assert isinstance(batch.arrays, bytes)  # numeric columns as bytes
    spooled = unpack(pack(None, batch))[1]  # through the spool and back
    assert spooled == batch
    for replay in (batch, spooled):
        assert store.write("predictions", lambda db, replay=replay: plog.write_encoded(db, replay))
    assert store.fetch("SELECT base, ts FROM prediction_batches ORDER BY ts") == [(ids(1)[0][:-2], 10.0), ("other", 30.0)]
    window = plog.window("m", 1, features=features)
    assert window.ids == [*ids(2, "other")[::-1], *ids(3)[::-1]]
    assert window.columns["x"].tolist() == [1.0, 1.0, 2.0, 1.0, 0.0] and window.predictions.tolist() == [1, 1, 0, 0, 0]
    # Another model may issue the same base: its own record.
    assert plog.record("n", 1, "r", ids(3), {"x": np.arange(3.0)}, np.zeros(3), None, 1, features, now=40.0)
    assert plog.window("n", 1, features=features).n == 3


def test_ids_that_are_not_base_and_position_are_refused_and_counted(store):
    plog = PredictionLog(store)
    features = [{"name": "x", "type": "float"}]
    assert plog.record("m", 1, "r", ["a-1", "a-2"], {"x": np.ones(2)}, np.ones(2), None, 1, features) is False
    assert plog.record("m", 1, "r", ["nodash"], {"x": np.ones(1)}, np.ones(1), None, 1, features) is False
    assert plog.write_failures == 2 and logged_ids(store) == []


PREVIOUS_LAYOUT = """
CREATE TABLE predictions (
    id TEXT PRIMARY KEY, request_id TEXT, ts DOUBLE PRECISION NOT NULL, model TEXT NOT NULL,
    version INTEGER NOT NULL, inputs TEXT NOT NULL, output TEXT NOT NULL, probabilities TEXT,
    latency_ms DOUBLE PRECISION);
CREATE INDEX predictions_model_version_ts ON predictions (model, version, ts);
INSERT INTO predictions (id, request_id, ts, model, version, inputs, output, probabilities, latency_ms)
    VALUES ('old-0', 'r', 100.0, 'm', 1, '{"x": 5.0}', '1', '[0.25,0.75]', 1.0);
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_database_of_the_previous_layout_keeps_working(tmp_path, request, backend):
    """Its rows become batch records at start: each keeps its id, inputs, output, probabilities and feedback."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.sqlite'}"
        with connected(tmp_path / "log.sqlite") as db:
            db.executescript(PREVIOUS_LAYOUT)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_server").create_database()
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(PREVIOUS_LAYOUT.replace("(\n    id", "(\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, id"))
    store, again = Store.from_url(url), Store.from_url(url)  # opened twice: the second finds the columns added
    assert "predictions" not in {r[0] for r in store.fetch(
        "SELECT name FROM sqlite_master WHERE type = 'table'" if backend == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    request.addfinalizer(store.close)
    request.addfinalizer(again.close)
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store)
    assert plog.record("m", 1, "r", ["new-0"], {"x": np.ones(1)}, np.zeros(1, dtype=int), np.array([[0.5, 0.5]]), 1,
                       features, now=200.0)
    assert plog.record_feedback("m", [{"id": "old-0", "label": 1}, {"id": "new-0", "label": 0}])["accepted"] == 2
    window = plog.window("m", 1, features=features)
    assert window.ids == ["new-0", "old-0"] and window.labels.tolist() == [0, 1]
    assert window.columns["x"].tolist() == [1.0, 5.0]
    assert window.predictions.tolist() == [0, 1] and window.probabilities.tolist() == [[0.5, 0.5], [0.25, 0.75]]
    assert plog.purge(0, now=1000.0)["predictions"] == 2


# -- privacy -----------------------------------------------------------------------------------


def pii_features(demo_root: Path) -> list[dict]:
    features = [dict(f) for f in manifest_features(demo_root, "diabetes")]
    for f in features:
        f["pii"] = f["name"] == "age"
    return [*features, {"name": "email", "type": "string", "pii": True}]


def pii_columns(features: list[dict], n: int) -> dict[str, np.ndarray]:
    columns = make_columns(features, n)
    columns["age"] = np.full(n, 987654321)
    columns["email"] = np.array([f"alice.{i}@example.org" for i in range(n)], dtype=object)
    return columns


def test_pii_is_hashed_with_a_key_and_never_stored_raw(demo_root, tmp_path):
    store = Store(tmp_path / "log.sqlite")
    features = pii_features(demo_root)
    plog = PredictionLog(store, pii_key="k" * 32)
    assert plog.record("diabetes", 1, "r", ids(20), pii_columns(features, 20), np.ones(20), None, 1, features)
    raw = db_bytes(store.path)
    assert b"alice." not in raw and b"987654321" not in raw
    inputs = stored_inputs(store, ids(20)[3])
    assert inputs["email"] == hash_value("alice.3@example.org", b"k" * 32)
    assert inputs["age"] == hash_value(987654321, b"k" * 32)
    window = plog.window("diabetes", 1, features=features)
    assert window.redacted == {"age", "email"}
    assert np.isnan(window.columns["age"]).all() and window.columns["email"].tolist() == [None] * 20
    assert not np.isnan(window.columns["bmi"]).any()


def test_pii_is_dropped_without_a_key(demo_root, tmp_path):
    store = Store(tmp_path / "log.sqlite")
    features = pii_features(demo_root)
    plog = PredictionLog(store, pii_key=None)
    assert plog.record("diabetes", 1, "r", ids(20), pii_columns(features, 20), np.ones(20), None, 1, features)
    raw = db_bytes(store.path)
    assert b"alice." not in raw and b"987654321" not in raw
    inputs = stored_inputs(store, ids(20)[0])
    assert "age" not in inputs and "email" not in inputs and "bmi" in inputs


# -- sampling ----------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_close_to_the_rate(store, make_store):
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store, sample_rate=0.2)
    sent = ids(10_000)
    assert plog.record("m", 1, "r", sent, {"x": np.arange(10_000.0)}, np.zeros(10_000), None, 1, features)
    logged = set(logged_ids(store))
    assert logged == {pid for pid in sent if is_sampled(pid, 0.2)}
    assert 0.18 < len(logged) / 10_000 < 0.22
    # The same id gets the same answer in another process's log, and a row keeps its own inputs.
    other = make_store("other")
    PredictionLog(other, sample_rate=0.2).record("m", 1, "r", sent, {"x": np.arange(10_000.0)}, np.zeros(10_000),
                                                 None, 1, features)
    assert set(logged_ids(other)) == logged
    assert [stored_inputs(other, pid) for pid in sent[:50] if pid in logged] \
        == [{"x": float(i)} for i, pid in enumerate(sent[:50]) if pid in logged]
    window = plog.window("m", 1, features=features)
    assert window.ids == [pid for pid in sent[::-1] if pid in logged]
    assert window.columns["x"].tolist() == [float(pid.rpartition("-")[2]) for pid in window.ids]
    unsampled = next(pid for pid in sent if pid not in logged)
    assert plog.record_feedback("m", [{"id": unsampled, "label": 1}, {"id": window.ids[0], "label": 1}])["unknown"] \
        == [unsampled]
    assert PredictionLog(store, sample_rate=0.0).record("m", 1, "r", ids(5, "zz"), {"x": np.ones(5)}, np.ones(5), None, 1,
                                                        features)
    assert not [pid for pid in logged_ids(store) if pid.startswith("zz-")]


# -- feedback ----------------------------------------------------------------------------------


def test_feedback_accepted_unknown_duplicate_late(store):
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store, late_after_seconds=3600)
    sent = ids(4)
    plog.record("m", 1, "r", sent, {"x": np.arange(4.0)}, np.array([0, 1, 0, 1]), None, 1, features, now=1000.0)
    plog.record("other", 1, "r", ["o-0"], {"x": np.ones(1)}, np.ones(1), None, 1, features, now=1000.0)
    result = plog.record_feedback("m", [
        {"id": sent[0], "label": 1},
        {"id": sent[1], "label": 0},
        {"id": sent[0], "label": 0},   # repeated in the batch: the first label wins
        {"id": "nope-1", "label": 1},  # never issued
        {"id": "o-0", "label": 1},     # another model's prediction
        {"label": 1},                   # malformed: no id
        {"id": sent[2]},                # malformed: no label
        "garbage",
    ], now=2000.0)
    assert result == {"accepted": 2, "unknown": ["nope-1", "o-0", None, sent[2], None], "duplicate": [sent[0]], "late": []}
    again = plog.record_feedback("m", [{"id": sent[1], "label": 1}, {"id": sent[3], "label": "1"}], now=1000.0 + 7200)
    assert again == {"accepted": 1, "unknown": [], "duplicate": [sent[1]], "late": [sent[3]]}
    window = plog.window("m", 1, features=features)
    labels = dict(zip(window.ids, window.labels.tolist(), strict=True))
    assert labels == {sent[0]: 1, sent[1]: 0, sent[2]: None, sent[3]: "1"}
    assert plog.record_feedback("m", []) == {"accepted": 0, "unknown": [], "duplicate": [], "late": []}


# -- windows -----------------------------------------------------------------------------------


def test_window_last_n_and_since_newest_first(store):
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store)
    for batch, ts in enumerate((100.0, 200.0, 300.0)):
        batch_ids = ids(3, f"b{batch}")
        plog.record("m", 1, "r", batch_ids, {"x": np.full(3, ts)}, np.full(3, batch), np.full((3, 2), 0.5), 1, features,
                    now=ts)
    plog.record("m", 2, "r", ["v2-0"], {"x": np.ones(1)}, np.ones(1), None, 1, features, now=400.0)
    plog.record_feedback("m", [{"id": "b2-0", "label": 7}, {"id": "b0-2", "label": 9}])

    last = plog.window("m", 1, last_n=4, features=features)
    assert last.n == 4 and last.ids == ["b2-2", "b2-1", "b2-0", "b1-2"]
    assert last.ts.tolist() == [300.0, 300.0, 300.0, 200.0]
    assert last.labels.tolist() == [None, None, 7, None]
    assert last.probabilities.shape == (4, 2)

    recent = plog.window("m", 1, since=200.0, features=features)
    assert recent.n == 6 and set(recent.predictions.tolist()) == {1, 2}
    assert plog.window("m", 1, since=200.0, last_n=2, features=features).ids == ["b2-2", "b2-1"]
    everything = plog.window("m", 1, features=features)
    assert everything.n == 9 and everything.labels.tolist()[6] == 9  # b0-2
    assert plog.window("m", None, features=features).n == 10
    empty = plog.window("m", 3, features=features)
    assert empty.n == 0 and empty.columns["x"].shape == (0,) and empty.probabilities is None


# -- retention ---------------------------------------------------------------------------------


def test_purge_removes_old_predictions_with_their_feedback(store):
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store)
    for ts in range(10):
        plog.record("m", 1 + ts % 2, "r", ids(3, f"t{ts}"), {"x": np.ones(3)}, np.ones(3), None, 1, features, now=float(ts))
    plog.record_feedback("m", [{"id": f"t{ts}-0", "label": 1} for ts in range(10)])
    store.record_requests([RequestRecord("r", float(ts), "m", 1, "production", 200, 1.0, 3) for ts in range(10)])
    store.record_shadow([ShadowRecord(float(ts), "m", 1, 2, 3, 1.0, 0.0) for ts in range(10)])
    counts = plog.purge(older_than_seconds=5, now=10.0)  # cut-off 5: ts 0..4 go
    assert counts == {"predictions": 15, "feedback": 5, "prediction_batches": 5, "requests": 5, "shadow": 5}
    assert store.fetch("SELECT min(ts), sum(rows) FROM prediction_batches") == [(5.0, 15)]
    assert store.fetch("SELECT count(*) FROM feedback") == [(5,)]
    assert store.fetch("SELECT min(ts), count(*) FROM prediction_batches") == [(5.0, 5)]
    assert store.purge(5, now=10.0, batch=2) == {"predictions": 0, "feedback": 0, "prediction_batches": 0,
                                                 "requests": 0, "shadow": 0}
    counts = store.purge(0, now=100.0, batch=2)  # several small batches
    assert (counts["predictions"], counts["prediction_batches"]) == (15, 5)


# -- concurrency and failures ------------------------------------------------------------------


def _writer(path: str, worker: int, batches: int, rows: int) -> None:
    plog = PredictionLog(Store(path, timeout=10))
    features = [{"name": "x", "type": "float"}]
    for b in range(batches):
        batch_ids = [f"w{worker}b{b}-{i}" for i in range(rows)]
        if not plog.record("m", 1, "r", batch_ids, {"x": np.arange(float(rows))}, np.zeros(rows), None, 1, features):
            raise SystemExit(1)


def test_concurrent_writers_in_two_processes_lose_no_row(tmp_path):
    path = str(tmp_path / "log.sqlite")
    Store(path)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(path, w, 100, 20)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    found = logged_ids(Store(path))
    assert (len(found), len(set(found))) == (4000, 4000)


def run_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_full_disk_returns_false_and_is_counted(tmp_path):
    Store(tmp_path / "log.sqlite")
    done = run_script("""
        import json, resource, signal
        import numpy as np
        from service.monitoring.predlog import PredictionLog
        from service.store import Store
        plog = PredictionLog(Store("log.sqlite"))
        features = [{"name": "x", "type": "float"}]
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write(2), not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        n = 20_000
        first = plog.record("m", 1, "r", [f"a-{i}" for i in range(n)], {"x": np.arange(n) / 7}, np.zeros(n), None, 1, features)
        second = plog.record("m", 1, "r", [f"b-{i}" for i in range(n)], {"x": np.arange(n) / 7}, np.zeros(n), None, 1, features)
        print(json.dumps({"results": [first, second], "failures": plog.write_failures}))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"results": [False, False], "failures": 2}
    assert done.stderr.count("store write failed") == 1  # logged once for the burst
    assert logged_ids(Store(tmp_path / "log.sqlite")) == []


def test_locked_database_returns_false_and_is_counted(tmp_path, caplog):
    store = Store(tmp_path / "log.sqlite", timeout=0.05)
    features = [{"name": "x", "type": "float"}]
    plog = PredictionLog(store)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.ERROR, logger="service.store"):
            assert plog.record("m", 1, "r", ["a-0"], {"x": np.ones(1)}, np.ones(1), None, 1, features) is False
            assert plog.record("m", 1, "r", ["b-0"], {"x": np.ones(1)}, np.ones(1), None, 1, features) is False
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert plog.write_failures == 2 and len(caplog.records) == 1
    assert plog.record("m", 1, "r", ["c-0"], {"x": np.ones(1)}, np.ones(1), None, 1, features) is True


def test_bad_input_is_counted_not_raised(store):
    plog = PredictionLog(store)
    features = [{"name": "x", "type": "float"}]
    assert plog.record("m", 1, "r", ["a-0", "a-1"], {"x": np.ones(3)}, np.ones(2), None, 1, features) is False
    assert plog.write_failures == 1


def test_a_committed_row_survives_a_crash_right_after_the_commit(tmp_path):
    Store(tmp_path / "log.sqlite")
    done = run_script("""
        import os, signal, sys
        import numpy as np
        from service.monitoring.predlog import PredictionLog
        from service.store import Store
        plog = PredictionLog(Store("log.sqlite"))
        ok = plog.record("m", 1, "r", ["crash-0"], {"x": np.ones(1)}, np.ones(1), None, 1, [{"name": "x", "type": "float"}])
        sys.stdout.write("committed" if ok else "failed")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the row lives only in the WAL
    """, tmp_path)
    assert done.returncode == -signal.SIGKILL and done.stdout == "committed", done.stderr
    assert logged_ids(Store(tmp_path / "log.sqlite")) == ["crash-0"]


def write_json_record(store: Store, base: str, ts: float, columns: dict, outputs, probabilities) -> None:
    """Insert a batch record as the JSON-only encoding wrote it (every column a list, no ``arrays``)."""
    def dumps(value):
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    store.write("predictions", lambda db: db.execute(
        "INSERT INTO prediction_batches (ts, model, version, request_id, latency_ms, rows, base, features, inputs,"
        " outputs, probabilities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ts, "m", 1, "r", 1.0, len(outputs), base, dumps(list(columns)),
         dumps([np.asarray(v).tolist() for v in columns.values()]), dumps(np.asarray(outputs).tolist()),
         None if probabilities is None else dumps(np.asarray(probabilities).tolist()))))


MIXED = [{"name": "x", "type": "float"}, {"name": "n", "type": "int"}, {"name": "b", "type": "bool"},
         {"name": "c", "type": "category", "categories": ["a", "b"]}]


def mixed_columns(offset: float) -> dict:
    return {"x": np.array([offset, np.nan, offset + 2]), "n": np.array([1, 2, 3]) + int(offset),
            "b": np.array([True, False, True]), "c": np.array(["a", None, "b"], dtype=object)}


@pytest.mark.parametrize("probabilities", [True, False])
def test_a_window_reads_json_and_binary_records_alike(make_store, probabilities):
    """A log written by the JSON encoding goes on being read after binary records join it."""
    store = make_store()
    plog = PredictionLog(store)
    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]) if probabilities else None
    write_json_record(store, "old", 10.0, mixed_columns(0), np.array([0, 1, 1]), proba)
    assert plog.record("m", 1, "r", ids(3, "new"), mixed_columns(100), np.array([1, 0, 1]), proba, 1.0, MIXED, now=20.0)
    (arrays,) = (row[0] for row in store.fetch("SELECT arrays FROM prediction_batches WHERE base = 'new'"))
    assert isinstance(arrays, bytes) and len(arrays) >= 8 * 3 * 3  # x, n and the outputs as bytes
    window = plog.window("m", 1, features=MIXED)
    assert window.ids == [*ids(3, "new")[::-1], *ids(3, "old")[::-1]]
    expected_x = [102.0, np.nan, 100.0, 2.0, np.nan, 0.0]
    assert window.columns["x"].dtype == np.float64
    assert np.array_equal(window.columns["x"], expected_x, equal_nan=True)
    assert window.columns["n"].tolist() == [103.0, 102.0, 101.0, 3.0, 2.0, 1.0]
    assert window.columns["b"].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert window.columns["c"].tolist() == ["b", None, "a", "b", None, "a"]
    assert window.predictions.tolist() == [1, 0, 1, 1, 1, 0] and window.predictions.dtype.kind == "i"
    if probabilities:
        assert window.probabilities.tolist() == [*proba[::-1].tolist(), *proba[::-1].tolist()]
    else:
        assert window.probabilities is None
    # Binary records alone come out as the arrays the JSON path gives.
    alone = plog.window("m", 1, last_n=3, features=MIXED)
    assert alone.predictions.dtype.kind == "i" and alone.columns["c"].dtype == object
    assert alone.probabilities is None if not probabilities else alone.probabilities.tolist() == proba[::-1].tolist()


def test_a_database_made_before_binary_columns_gains_them_and_keeps_its_records(make_store, tmp_path):
    if make_store.backend == "sqlite":  # the file as the JSON-only schema made it
        before = re.sub(r"probabilities TEXT,.*?arrays \{bytes\}.*?\n.*?\n", "probabilities TEXT\n", SCHEMA, flags=re.S)
        assert "arrays {" not in before and "probabilities TEXT\n" in before
        with connected(tmp_path / "db.sqlite") as db:
            db.executescript(before.format(rowid="", any="", serial="INTEGER PRIMARY KEY"))
        store = make_store()
    else:
        store = make_store()
        with store.transaction() as db:
            db.execute("ALTER TABLE prediction_batches DROP COLUMN arrays")
    write_json_record(store, "old", 10.0, mixed_columns(0), np.array([0, 1, 1]), None)
    again = make_store()  # the next start: the migration adds the column
    assert "arrays" in again.column_names("prediction_batches")
    plog = PredictionLog(again)
    assert plog.record("m", 1, "r", ids(3, "new"), mixed_columns(100), np.array([1, 0, 1]), None, 1.0, MIXED, now=20.0)
    window = plog.window("m", 1, features=MIXED)
    assert window.columns["n"].tolist() == [103.0, 102.0, 101.0, 3.0, 2.0, 1.0]
    assert stored_inputs(again, "old-2") == {"x": 2.0, "n": 3, "b": True, "c": "b"}
    assert stored_inputs(again, "new-1") == {"x": None, "n": 102, "b": False, "c": None}


def test_encoding_a_batch_of_numbers_costs_a_copy_of_their_bytes(store):
    """About 8 bytes a value: the size of what a 10,000 x 30 batch writes (its time: bench.log_cost)."""
    features = [{"name": f"f{j}", "type": "float"} for j in range(30)]
    rng = np.random.default_rng(0)
    columns = {f["name"]: rng.normal(size=10_000) for f in features}
    batch = PredictionLog(store).encode("m", 1, "r", ids(10_000), columns, rng.integers(0, 2, 10_000),
                                        rng.random((10_000, 2)), 1.0, features, ts=1.0)
    stored = store.arrays_of(batch.arrays, batch.arrays_ref)  # a blob file's on SQLite, the row's on PostgreSQL
    assert len(stored) == 8 * 10_000 * (30 + 1 + 2)
    assert (batch.arrays is None) == (store.blobs is not None)
    assert len(batch.inputs) + len(batch.outputs) + len(batch.probabilities) < 2_000  # descriptors only


def test_a_sample_of_a_larger_batch_is_one_record_under_its_rows_own_ids(store, demo_root):
    """A batch run logs a few thousand of its rows: encode takes their positions in the run."""
    features = manifest_features(demo_root, "diabetes")
    log = PredictionLog(store)
    positions = [3, 17, 250_000]
    run_ids = [f"18c0ffee0000abcdef0000aa-{p}" for p in positions]
    batch = log.encode("diabetes", 1, "run", run_ids, make_columns(features, 3), np.array([1.0, 2.0, 3.0]), None,
                       5.0, features, ts=1.0, positions=positions)
    with store.transaction() as db:
        log.write_encoded(db, batch)
    assert logged_ids(store, "diabetes") == run_ids
    assert log.record_feedback("diabetes", [{"id": run_ids[2], "label": 2.0}])["accepted"] == 1
    with pytest.raises(ValueError, match="ascending"):
        log.encode("diabetes", 1, "run", run_ids, make_columns(features, 3), np.zeros(3), None, 5.0, features,
                   ts=1.0, positions=[3, 2, 250_000])
