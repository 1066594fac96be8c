"""A version's window figures are computed again exactly when the window changed.

The alert loop asks for the same window every ``ALERT_SECONDS``; a worker keeps the last
figures and the decoded records. Whatever happened in between (nothing, a new record, a label,
an erasure that rewrites a record, a purge), the kept answer must equal a fresh worker's.
Runs on SQLite and PostgreSQL (the ``make_store`` fixture).
"""

from __future__ import annotations

import gc
import json
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from service.monitoring.predlog import PredictionLog
from service.monitoring.report import Monitoring
from service.serving import runtime
from service.serving.catalog import Catalog

MODEL = "breast-cancer"
SUBJECT = "mean radius"  # whom each row is about, for erasure
WINDOW = 150


@pytest.fixture
def setup(demo_root: Path, make_store) -> tuple[Catalog, PredictionLog, Any]:
    catalog = Catalog(demo_root)
    catalog.refresh()
    return catalog, PredictionLog(make_store("log")), catalog.model(MODEL).available(1)


def record(log: PredictionLog, model: Any, base: str, picks: np.ndarray, ts: float) -> list[str]:
    data = load_breast_cancer(as_frame=True).frame
    columns = {f["name"]: data[f["name"]].to_numpy()[picks] for f in model.features}
    predictions = data["target"].to_numpy()[picks]
    probabilities = np.column_stack([1.0 - predictions, predictions]).astype(float)
    ids = [f"{base}-{i}" for i in range(len(picks))]
    assert log.record(MODEL, 1, base, ids, columns, predictions, probabilities, 1.0, model.features, now=ts,
                      subject=SUBJECT)
    return ids


def figures(monitoring: Monitoring, model: Any, minutes: bool) -> dict[str, Any]:
    since = time.time() - 3600 if minutes else None
    return monitoring.version_report(model, None if minutes else WINDOW, None, [], since)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@pytest.mark.parametrize("minutes", [False, True], ids=["last_n", "minutes"])
def test_kept_figures_equal_a_fresh_workers_after_every_kind_of_change(setup, minutes):
    catalog, log, model = setup
    rng = np.random.default_rng(1)
    now = time.time()
    for k in range(120):
        record(log, model, f"one{k:03d}", rng.integers(0, 569, 1), now - 600 + k)
    batch = record(log, model, "batch", np.arange(40, 100), now - 300)
    kept = Monitoring(catalog, log, WINDOW)

    def check() -> dict[str, Any]:
        found = figures(kept, model, minutes)
        assert same(found, figures(Monitoring(catalog, log, WINDOW), model, minutes))
        return found

    first = check()
    again = check()
    assert again["drift"] is first["drift"] and again["bias"] is first["bias"]  # nothing new: not computed again
    assert first["performance"]["labelled"] == 0

    record(log, model, "late", rng.integers(0, 569, 1), now - 10)
    newer = check()
    assert newer["drift"] is not first["drift"]

    assert log.record_feedback(MODEL, [{"id": batch[5], "label": 1}])["accepted"] == 1
    labelled = check()
    assert labelled["performance"]["labelled"] == 1 and labelled["drift"] is not newer["drift"]

    radius = float(load_breast_cancer(as_frame=True).frame[SUBJECT].to_numpy()[45])
    _, counts = log.erase(radius, MODEL)  # rewrites the 60-row record without the subject's rows
    assert counts["prediction_batches_rewritten"] >= 1
    erased = check()
    assert erased["drift"] is not labelled["drift"]
    assert erased["performance"]["labelled"] == 0  # the labelled row was the subject's: its label went too

    log.purge(500, now=now)  # the oldest 1-row records go
    purged = check()
    assert purged["drift"] is not erased["drift"]
    assert check()["drift"] is purged["drift"]


def test_another_load_of_the_version_gets_its_own_figures_and_none_keeps_a_model_alive(setup, demo_root):
    catalog, log, _ = setup
    record(log, catalog.model(MODEL).available(1), "one", np.arange(3), time.time())
    monitoring = Monitoring(catalog, log, WINDOW)
    first = runtime.load(demo_root / MODEL / "1", name=MODEL, version=1)
    kept = figures(monitoring, first, False)
    alive = weakref.ref(first)
    second = runtime.load(demo_root / MODEL / "1", name=MODEL, version=1)
    again = figures(monitoring, second, False)
    assert same(again, kept) and again["drift"] is not kept["drift"]
    del first
    gc.collect()
    assert alive() is None
