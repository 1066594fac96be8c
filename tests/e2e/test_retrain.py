"""End to end: real Gunicorn serves the demo classifier, production feedback arrives, ``retrain`` runs.

The first test sends traffic whose relation to the label shifts (a sensor now reads every size
measurement 1.5 times larger), so a challenger that learned from the older labelled rows beats
the champion on the newest ones: it is packaged with its lineage and started as a shadow. The
second sends feedback whose older labels are wrong, so the challenger loses and nothing is
packaged. Each prints the report the command line gave (run with ``-s`` to read it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from tests.conftest import REPO, SCRUBBED_ENV
from tests.sqlite import connected

pytestmark = pytest.mark.e2e

SEED = 42
NAME = "breast-cancer"
BATCH = 50


def data() -> tuple[pd.DataFrame, pd.Series]:
    loaded = load_breast_cancer(as_frame=True)
    return loaded.data, loaded.target


def base_file(tmp_path: Path) -> Path:
    """The demo's own training split, as the team that trained the champion would have kept it."""
    X, y = data()
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=SEED, stratify=y)
    path = tmp_path / "base.csv"
    X_train.assign(target=y_train).to_csv(path, index=False)
    return path


def production_rows(scale_sizes: float) -> tuple[pd.DataFrame, pd.Series]:
    """Every row of the data set once, shuffled and jittered by 1% (no row equals a training row),
    with the size measurements multiplied by ``scale_sizes``."""
    X, y = data()
    rng = np.random.default_rng(7)
    order = rng.permutation(len(X))
    rows = X.iloc[order].reset_index(drop=True) * rng.normal(1.0, 0.01, size=X.shape).clip(0.97, 1.03)
    sizes = [c for c in X.columns if any(word in c for word in ("radius", "perimeter", "area"))]
    rows[sizes] = rows[sizes] * scale_sizes
    return rows, y.iloc[order].reset_index(drop=True)


def serve_and_label(server, rows: pd.DataFrame, labels: list[int]) -> list[str]:
    """Predict every row in batches (oldest first), then post each row's ground truth."""
    ids: list[str] = []
    records = json.loads(rows.to_json(orient="records"))
    for start in range(0, len(records), BATCH):
        answer = server.post(f"/v1/models/{NAME}:predict", json={"instances": records[start:start + BATCH]})
        assert answer.status_code == 200, answer.text
        ids += answer.json()["ids"]
        time.sleep(0.02)  # batches a little apart: the hold-out is a time split
    feedback = [{"id": i, "label": int(label)} for i, label in zip(ids, labels, strict=True)]
    result = server.post(f"/v1/models/{NAME}/feedback", json={"feedback": feedback})
    assert result.status_code == 200 and result.json()["accepted"] == len(ids), result.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the log is written after the answer: wait until it holds every row
        report = server.get(f"/v1/models/{NAME}/monitoring?window=1000").json()
        if report["versions"]["1"]["n"] == len(ids) and report["versions"]["1"]["performance"]["labelled"] == len(ids):
            break
        time.sleep(0.3)
    return ids


def retrain(server, artifacts: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(ARTIFACTS_DIR=str(artifacts),
               DATABASE_URL=f"sqlite:///{artifacts.parent / f'db-{server.port}' / 'predictions.db'}")
    done = subprocess.run([sys.executable, "-m", "service", "retrain", NAME, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    print(f"\n$ python -m service retrain {NAME} {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done


def test_a_challenger_that_learned_the_shift_is_packaged_and_shadowed(artifact_root, server_factory, tmp_path):
    server = server_factory(artifact_root, GUARD_SECONDS="0")
    rows, labels = production_rows(scale_sizes=1.5)
    serve_and_label(server, rows, labels.tolist())

    done = retrain(server, artifact_root, "--train", str(base_file(tmp_path)), "--since", "1h", "--min-gain", "0.02",
                   "--then", "shadow")

    assert done.returncode == 0, done.stderr
    assert "verdict: PASSED" in done.stdout
    assert f"packaged: {NAME} version 2 (parent 1)" in done.stdout
    assert "rollout: version 2 started as shadow" in done.stdout
    manifest = json.loads((artifact_root / NAME / "2" / "manifest.json").read_text())
    lineage = manifest["retrain"]
    assert manifest["parent_version"] == 1 and lineage["parent_version"] == 1
    assert lineage["production_rows"]["rows"] == 455 and lineage["holdout_rows"]["rows"] == 114
    assert lineage["base_data"]["rows"] == 426 and len(lineage["base_data"]["sha256"]) == 64
    gain = lineage["comparison"]["gain"]
    assert gain["value"] >= 0.02 and gain["low"] > 0
    assert lineage["comparison"]["challenger"]["accuracy"]["value"] > lineage["comparison"]["champion"]["accuracy"]["value"]
    state = json.loads((artifact_root / NAME / "registry.json").read_text())
    assert state["labels"]["production"] == 1 and state["rollout"]["shadow"] == [2]
    # the running server follows: version 2 gets a copy of the traffic while version 1 answers
    some = {"instances": json.loads(rows.head(20).to_json(orient="records"))}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = server.post(f"/v1/models/{NAME}:predict", json=some)
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
        shadows = server.get(f"/v1/models/{NAME}/comparison").json().get("shadow") or {}
        if "1->2" in shadows:
            break
        time.sleep(0.5)
    assert shadows["1->2"]["comparisons"] >= 1
    described = server.get(f"/v1/models/{NAME}/versions/2").json()
    assert described["parent_version"] == 1 and described["retrain"]["holdout_rows"]["rows"] == 114
    card = server.get(f"/v1/models/{NAME}/versions/2/card?format=md")
    assert card.status_code == 200 and "## Retrained from production feedback" in card.text
    assert "**Retrained from version** 1" in card.text


def test_a_challenger_taught_by_wrong_labels_is_not_packaged(artifact_root, server_factory, tmp_path):
    server = server_factory(artifact_root, GUARD_SECONDS="0")
    rows, labels = production_rows(scale_sizes=1.0)
    truth = labels.to_numpy()
    told = np.where(np.arange(len(truth)) < 455, 1 - truth, truth)  # the older feedback was inverted by a bug
    serve_and_label(server, rows, told.tolist())

    done = retrain(server, artifact_root, "--train", str(base_file(tmp_path)), "--since", "1h", "--then", "shadow")

    assert done.returncode == 0, done.stderr
    assert "verdict: FAILED (decided by the gain gate" in done.stdout
    assert "packaged: nothing" in done.stdout and "rollout:" not in done.stdout
    assert "challenger not packaged: gain gate" in done.stderr
    assert sorted(p.name for p in (artifact_root / NAME).iterdir() if p.name.isdigit()) == ["1"]
    state = json.loads((artifact_root / NAME / "registry.json").read_text())
    assert state["rollout"]["shadow"] == []


ALERT_RULES = """
replace_defaults = true

[[rules]]
name = "retrain_on_accuracy"
description = "Live accuracy fell below 0.9: retrain from feedback"
metric = "performance.metrics.accuracy"
op = "<"
alert = 0.9
samples = "performance.labelled"
min_samples = 100
action = "retrain"

[rules.retrain]
train = "{train}"
since = "1h"
min_gain = 0.02
then = "shadow"
"""


def test_an_alert_on_live_accuracy_retrains_notifies_and_never_promotes(artifact_root, server_factory, tmp_path):
    from tests.conftest import Webhook

    rules = tmp_path / "alerts.toml"
    rules.write_text(ALERT_RULES.format(train=base_file(tmp_path)))
    hook = Webhook()
    try:
        server = server_factory(artifact_root, GUARD_SECONDS="0", ALERT_SECONDS="1", ALERT_RULES_FILE=str(rules),
                                ALERT_WEBHOOK_URL=hook.url)
        rows, labels = production_rows(scale_sizes=1.5)
        serve_and_label(server, rows, labels.tolist())
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not [n for n in hook.received if n["status"] == "retrain"]:
            time.sleep(0.5)
    finally:
        hook.close()
    firing = [n for n in hook.received if n["status"] == "firing" and n["rule"] == "retrain_on_accuracy"]
    (outcome,) = [n for n in hook.received if n["status"] == "retrain"]
    log = server.log_path.read_text()
    report = log[log.index("retrain breast-cancer: champion version 1"):]
    print("\n(the alert-driven run's report, from the server's log)\n" + report[:report.index("rollout:")]
          + report[report.index("rollout:"):].splitlines()[0] + "\n" + json.dumps(outcome, indent=2))
    assert firing and firing[0]["value"] < 0.9
    assert outcome["rule"] == "retrain_on_accuracy" and outcome["model"] == NAME
    assert outcome["details"]["packaged"] is True and outcome["details"]["challenger"] == 2
    assert outcome["details"]["rollout"]["kind"] == "shadow"
    assert outcome["description"] == f"{NAME}: challenger packaged as version 2; started as shadow"
    state = json.loads((artifact_root / NAME / "registry.json").read_text())
    assert state["labels"]["production"] == 1 and state["rollout"]["shadow"] == [2]  # no promotion without a person
    database = artifact_root.parent / f"db-{server.port}" / "predictions.db"

    with connected(database) as db:
        audited = db.execute("SELECT actor, action FROM audit WHERE action LIKE 'model.retrain.%' ORDER BY seq").fetchall()
    assert audited == [("alert:retrain_on_accuracy", "model.retrain.started"),
                       ("alert:retrain_on_accuracy", "model.retrain.finished")]
