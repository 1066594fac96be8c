"""Erasure on both backends: one person's predictions, feedback and batch rows go; nobody else's move."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

from service.explain import past
from service.monitoring.predlog import PredictionLog
from service.security import audit
from service.store import Store
from tests.builders import logged_ids
from tests.sqlite import connected

FEATURES = [{"name": "customer_id", "type": "string", "pii": True}, {"name": "x", "type": "float"},
            {"name": "city", "type": "category"}]


def record(plog: PredictionLog, request: str, customers: list[str], *, model: str = "m", now: float = 100.0,
           subject: str | None = "customer_id") -> list[str]:
    """Log one batch of rows for these customers; x is each row's position, city a marker of the row."""
    ids = [f"{request}-{i}" for i in range(len(customers))]
    columns = {"customer_id": np.array(customers, dtype=object), "x": np.arange(len(customers), dtype=float),
               "city": np.array([f"{request}:{c}" for c in customers], dtype=object)}
    probabilities = np.array([[i / 10, 1 - i / 10] for i in range(len(customers))])
    assert plog.record(model, 1, request, ids, columns, np.arange(len(customers)), probabilities, 1.0, FEATURES,
                       now=now, subject=subject)
    return ids


def test_erasure_removes_one_person_everywhere_and_keeps_the_others_readable(make_store):
    store = make_store()
    plog = PredictionLog(store, pii_key="k")
    first = record(plog, "a", ["alice", "bob", "alice", "carol"])
    second = record(plog, "b", ["alice"], now=101.0)
    third = record(plog, "c", ["dave", "erin"], now=102.0)
    plog.record_feedback("m", [{"id": first[0], "label": 1}, {"id": first[1], "label": 0}, {"id": second[0], "label": 1}])

    hashes = plog.subject_hashes("alice")
    subject_hash, counts = plog.erase("alice")

    assert hashes == [subject_hash]
    assert counts == {"predictions": 3, "feedback": 2, "prediction_batches_rewritten": 1,
                      "prediction_batches_deleted": 1}
    assert hashes and not any(h in subjects for h in hashes for (subjects,) in store.fetch(
        "SELECT subjects FROM prediction_batches"))
    assert logged_ids(store) == [first[1], first[3], *third]
    assert store.fetch("SELECT id FROM feedback") == [(first[1],)]
    for (inputs,) in store.fetch("SELECT inputs FROM prediction_batches"):
        assert "alice" not in inputs and not any(h in inputs for h in hashes)
    assert store.fetch("SELECT rows FROM prediction_batches ORDER BY ts") == [(2,), (2,)]
    window = plog.window("m", 1, features=FEATURES)
    by_id = dict(zip(window.ids, window.columns["city"].tolist(), strict=True))
    assert by_id == {first[1]: "a:bob", first[3]: "a:carol", third[0]: "c:dave", third[1]: "c:erin"}
    outputs = dict(zip(window.ids, window.predictions.tolist(), strict=True))
    assert outputs[first[1]] == 1 and outputs[first[3]] == 3  # each row keeps its own output, not a neighbour's
    assert dict(zip(window.ids, window.probabilities[:, 0].tolist(), strict=True))[first[3]] == pytest.approx(0.3)
    assert window.labels.tolist().count(0) == 1  # bob's label stays


def test_an_unknown_subject_and_another_models_rows_are_left_alone(make_store):
    store = make_store()
    plog = PredictionLog(store)  # no PII_HASH_KEY: the store's own key
    record(plog, "a", ["alice", "bob"])
    record(plog, "b", ["alice"], model="other")
    assert plog.erase("zoe")[1] == dict.fromkeys(("predictions", "feedback", "prediction_batches_rewritten",
                                                   "prediction_batches_deleted"), 0)
    assert plog.erase("alice", model="other")[1]["predictions"] == 1
    assert store.fetch("SELECT model, SUM(rows) FROM prediction_batches GROUP BY model") == [("m", 2)]
    assert plog.erase("alice")[1]["predictions"] == 1


def test_without_a_subject_nothing_is_hashed_and_nothing_can_be_erased(make_store):
    store = make_store()
    plog = PredictionLog(store, pii_key="k")
    record(plog, "a", ["alice"], subject=None)
    assert store.fetch("SELECT subjects FROM prediction_batches") == [(None,)]
    assert store.fetch("SELECT COUNT(*) FROM store_secrets") == [(0,)]
    assert plog.erase("alice")[1]["predictions"] == 0


def test_the_subject_hash_is_keyed_and_a_missing_value_is_findable_by_nobody(make_store):
    store = make_store()
    plog = PredictionLog(store)
    record(plog, "a", ["alice", None])
    (secret,) = store.fetch("SELECT value FROM store_secrets")[0]
    ((stored,),) = store.fetch("SELECT subjects FROM prediction_batches")
    subjects = json.loads(stored)
    assert subjects[1] == "" and len(subjects[0]) == 64 and "alice" not in subjects[0]
    assert plog.subject_hashes("alice") == [subjects[0]] and len(secret) == 64
    assert PredictionLog(store, pii_key="k").subject_hashes("alice")[1] == subjects[0]  # the old key still found


def test_erasure_is_one_audit_record_and_the_chain_still_verifies(make_store):
    store = make_store()
    plog = PredictionLog(store, pii_key="k")
    record(plog, "a", ["alice", "bob"])
    audit.record(store, "cli:x", "key.create", "key:a")
    subject_hash, counts = plog.erase("alice")
    audit.record(store, "cli:x", "subject.erase", f"subject:{subject_hash}", {"model": None, "counts": counts})
    assert audit.verify(store).ok
    assert "alice" not in str(list(audit.records(store)))


PREVIOUS_DDL = """
CREATE TABLE predictions (
    {rowid} id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    batch BIGINT, row_index INTEGER);
CREATE INDEX predictions_model_version_ts ON predictions (model, version, ts);
INSERT INTO predictions (id, ts, model, version, batch, row_index) VALUES ('old-0', 1.0, 'm', 1, NULL, NULL);
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_database_from_before_erasure_is_moved_to_batch_records(tmp_path, request, backend):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.sqlite'}"
        with connected(tmp_path / "log.sqlite") as db:
            db.executescript(PREVIOUS_DDL.format(rowid=""))
    else:
        url = request.getfixturevalue("postgres_server").create_database()
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(PREVIOUS_DDL.format(rowid="rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,"))
    store, again = Store.from_url(url), Store.from_url(url)
    request.addfinalizer(store.close)
    request.addfinalizer(again.close)
    plog = PredictionLog(again, pii_key="k")
    record(plog, "a", ["alice", "bob"])
    assert store.fetch("SELECT base, subjects FROM prediction_batches WHERE base = 'old'") == [("old", None)]
    assert plog.erase("alice")[1]["predictions"] == 1
    assert sorted(logged_ids(store)) == ["a-1", "old-0"]


def test_sampled_rows_keep_their_own_subject_and_an_unflagged_subject_is_hashed_too(make_store):
    store = make_store()
    plog = PredictionLog(store, pii_key="k", sample_rate=0.5)
    customers = [f"c{i}" for i in range(40)]
    ids = record(plog, "a", customers)
    ((stored,),) = store.fetch("SELECT subjects FROM prediction_batches")
    kept = dict(zip(logged_ids(store), json.loads(stored), strict=True))
    assert 0 < len(kept) < 40
    assert all(kept[pid] == plog.subject_hashes(customers[ids.index(pid)])[0] for pid in kept)
    plain = [dict(f, pii=False) if f["name"] == "customer_id" else f for f in FEATURES]  # a manifest written by hand
    batch = PredictionLog(store, pii_key="k").encode("m", 1, "b", ["b-0"], {"customer_id": np.array(["zoe"], dtype=object),
                                                     "x": np.zeros(1), "city": np.array(["x"], dtype=object)},
                                                     np.zeros(1), None, 1.0, plain, ts=1.0, subject="customer_id")
    assert "zoe" not in batch.subjects and json.loads(batch.subjects) == [plog.subject_hashes("zoe")[0]]


@pytest.mark.parametrize("alices", [3, 70])  # renumbered by one statement, or row by row past MAX_SHIFT_TERMS
def test_many_rows_of_one_person_in_one_batch_leave_the_others_aligned(make_store, alices):
    store = make_store()
    plog = PredictionLog(store, pii_key="k")
    customers = ["alice" if i % 2 == 0 and i < 2 * alices else f"other{i}" for i in range(2 * alices + 10)]
    ids = record(plog, "a", customers)
    assert plog.erase("alice")[1]["predictions"] == alices
    window = plog.window("m", 1, features=FEATURES)
    assert sorted(window.ids) == sorted(pid for pid, who in zip(ids, customers, strict=True) if who != "alice")
    assert all(city == f"a:{customers[ids.index(pid)]}" for pid, city in zip(window.ids, window.columns["city"], strict=True))
    assert store.fetch("SELECT rows FROM prediction_batches") == [(alices + 10,)]
    assert plog.record_feedback("m", [{"id": ids[0], "label": 1}, {"id": ids[1], "label": 1}])["unknown"] == [ids[0]]
    assert past.find(store, "m", ids[1]).inputs["city"] == f"a:{customers[1]}"
    with pytest.raises(past.PredictionNotFound):
        past.find(store, "m", ids[0])


def test_erasure_rewrites_a_record_in_the_binary_encoding_whichever_it_had(make_store):
    """A binary record, and one the JSON encoding wrote: what is left of each is bytes, and reads the same."""
    store = make_store()
    plog = PredictionLog(store, pii_key="k")
    new = record(plog, "a", ["alice", "bob", "carol"])
    subjects = json.dumps([plog.subject_hashes(who)[0] for who in ("carol", "alice", "bob")])
    old = ["b-0", "b-1", "b-2"]
    store.write("predictions", lambda db: db.execute(  # as the JSON-only encoding wrote it
        "INSERT INTO prediction_batches (ts, model, version, rows, base, subjects, features, inputs, outputs,"
        " probabilities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (99.0, "m", 1, 3, "b", subjects, '["customer_id", "x", "city"]',
         json.dumps([["h-carol", "h-alice", "h-bob"], [0.5, None, 2.5], ["b:carol", "b:alice", "b:bob"]]),
         "[7, 8, 9]", "[[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]")))
    assert store.fetch("SELECT arrays FROM prediction_batches WHERE base = 'b'") == [(None,)]

    assert plog.erase("alice")[1]["prediction_batches_rewritten"] == 2

    rows = dict(store.fetch("SELECT base, arrays FROM prediction_batches"))
    assert all(isinstance(arrays, bytes) for arrays in rows.values()), rows
    window = plog.window("m", 1, features=FEATURES)
    assert window.ids == [new[2], new[1], old[2], old[0]]
    assert np.array_equal(window.columns["x"], [2.0, 1.0, 2.5, 0.5])
    assert window.columns["city"].tolist() == ["a:carol", "a:bob", "b:bob", "b:carol"]
    assert window.predictions.tolist() == [2, 1, 9, 7] and window.predictions.dtype.kind == "i"
    assert window.probabilities.tolist() == [[0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.1, 0.9]]
    assert past.find(store, "m", old[0]).inputs == {"customer_id": "h-carol", "x": 0.5, "city": "b:carol"}
    assert past.find(store, "m", new[1]).output == 1 and past.find(store, "m", new[1]).inputs["x"] == 1.0
    with pytest.raises(past.PredictionNotFound):
        past.find(store, "m", old[1])
