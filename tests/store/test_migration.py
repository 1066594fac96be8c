"""A database written by the code before batch records (``data/made_by_4c5bea6.sql``: a dump of one
made by commit 4c5bea6, with an erasure, a sampled batch, feedback and two versions) keeps working:
every id, its inputs, feedback, windows and erasure, with its ``predictions`` rows folded in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.explain import past
from service.monitoring.predlog import PredictionLog
from service.store import Store, migration
from tests.builders import logged_ids
from tests.sqlite import connected

DUMP = Path(__file__).parent / "data" / "made_by_4c5bea6.sql"
FEATURES = [{"name": "customer_id", "type": "string", "pii": True}, {"name": "x", "type": "float"}]
#: What the dump holds: alice erased from the aaa batch; ccc sampled at 0.5 (the positions kept).
IDS = ["aaa-1", "aaa-3", "bbb-0", "bbb-1", "bbb-2", *(f"ccc-{i}" for i in (0, 3, 5, 12, 13, 14, 16))]


@pytest.fixture
def old_database(tmp_path) -> Path:
    path = tmp_path / "log.sqlite"
    with connected(path) as db:
        db.executescript(DUMP.read_text())
    return path


def test_every_logged_prediction_keeps_its_id_inputs_output_and_feedback(old_database):
    store = Store(old_database)
    plog = PredictionLog(store, pii_key="k")
    assert logged_ids(store) == IDS
    assert store.fetch("SELECT name FROM sqlite_master WHERE name = 'predictions'") == []
    window = plog.window("m", 1, features=FEATURES)
    assert window.ids == ["ccc-16", "ccc-14", "ccc-13", "ccc-12", "ccc-5", "ccc-3", "ccc-0", "aaa-3", "aaa-1"]
    assert window.columns["x"].tolist() == [16, 14, 13, 12, 5, 3, 0, 3, 1]  # each row its own inputs
    assert window.predictions.tolist() == [116, 114, 113, 112, 105, 103, 100, 3, 1]
    assert window.labels.tolist()[-1] == 1
    assert plog.window("m", 2, features=FEATURES).labels.tolist() == [0, None, None]
    answer = plog.record_feedback("m", [{"id": "aaa-0", "label": 1}, {"id": "aaa-3", "label": 1},
                                        {"id": "ccc-1", "label": 0}, {"id": "bbb-2", "label": 1}])
    assert answer["unknown"] == ["aaa-0", "ccc-1"] and answer["duplicate"] == ["bbb-2"] and answer["accepted"] == 1
    assert past.find(store, "m", "ccc-12").output == 112 and past.find(store, "m", "aaa-3").inputs["x"] == 3.0
    assert plog.erase("carol")[1]["predictions"] == 1  # its hash was kept per row
    assert "aaa-3" not in logged_ids(store) and "aaa-1" in logged_ids(store)


def test_migration_runs_in_short_steps_and_new_writes_follow(old_database, monkeypatch):
    monkeypatch.setattr(migration, "STEP_ROWS", 2)  # a step per timestamp at most: never a half batch
    store = Store(old_database)
    assert logged_ids(store) == IDS
    plog = PredictionLog(store)
    assert plog.record("m", 1, "r", ["ddd-0"], {"x": np.ones(1)}, np.ones(1), None, 1, FEATURES, now=200.0)
    assert plog.window("m", 1, last_n=1, features=FEATURES).ids == ["ddd-0"]
    Store(old_database)  # a second start finds nothing left to do
    assert logged_ids(store) == [*IDS, "ddd-0"]
