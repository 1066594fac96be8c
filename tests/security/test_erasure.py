"""The erasure case of the security review, replayed: "there is no way to erase one person's data".

A model whose manifest declares ``subject: customer_id`` is served; three customers are predicted
and labelled; erasing one, over HTTP and from the command line, must leave no row about them in
any table (nor their raw id or its hash anywhere in the database file), leave the others readable
by monitoring, and be audited without the raw subject.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.monitoring.predlog import PredictionLog
from service.security import audit
from service.security.keys import create_key
from service.store.records import ids_of
from tests.builders import logged_ids, package_with_subject, wait_until
from tests.conftest import SCRUBBED_ENV

PEOPLE = ["alice@example.com", "bob@example.com", "alice@example.com", "carol@example.com"]
KEY = "pii-secret"


@pytest.fixture
def served(make_app, tmp_path):
    root = tmp_path / "artifacts"
    package_with_subject(root)
    keys = tmp_path / "keys.json"
    admin, predict = create_key(keys, "dpo", ["admin"]), create_key(keys, "shop", ["predict", "read"])
    app = make_app(artifacts_dir=root, api_keys_file=keys, pii_hash_key=KEY)
    client = app.test_client()
    answers = [client.post("/v1/models/people:predict", headers={"X-API-Key": predict},
                           json={"instances": [{"x": float(i), "customer_id": who} for i, who in enumerate(PEOPLE)]})
               for _ in range(2)]
    assert all(a.status_code == 200 for a in answers), answers[0].get_json()
    ids = [pid for a in answers for pid in a.get_json()["ids"]]
    app.extensions["observer"].flush()  # what is still queued; the writer thread may hold the rest
    store = app.extensions["store"]
    wait_until(lambda: len(logged_ids(store)) == 8, message="8 predictions logged")
    labels = client.post("/v1/models/people/feedback", headers={"X-API-Key": predict},
                         json={"feedback": [{"id": pid, "label": 1} for pid in ids]})
    assert labels.get_json()["accepted"] == 8
    return app, client, admin, ids, predict


def rows_about(store, plog: PredictionLog, who: str) -> dict[str, int]:
    hashes = plog.subject_hashes(who)
    about = []  # the ids of this person's rows, from each record's per-row subject hashes
    for base, rows, positions, subjects in store.fetch("SELECT base, rows, positions, subjects FROM prediction_batches"):
        row_ids = ids_of(base, rows, None if positions is None else json.loads(positions))
        about += [pid for pid, h in zip(row_ids, json.loads(subjects or "[]"), strict=False) if h in hashes]
    labelled = {r[0] for r in store.fetch("SELECT id FROM feedback")}
    found = {"predictions": len(about), "feedback": len(labelled & set(about))}
    found["batch_inputs"] = sum(any(h in inputs for h in hashes) or who in inputs
                                for (inputs,) in store.fetch("SELECT inputs FROM prediction_batches"))
    return found


def test_erasing_one_person_over_http_leaves_no_row_about_them(served):
    app, client, admin, ids, reader = served
    store, plog = app.extensions["store"], app.extensions["prediction_log"]
    assert rows_about(store, plog, "alice@example.com") == {"predictions": 4, "feedback": 4, "batch_inputs": 2}

    answer = client.post("/v1/subjects:erase", headers={"X-API-Key": admin}, json={"subject": "alice@example.com"})

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["deleted"] == {"predictions": 4, "feedback": 4, "prediction_batches_rewritten": 2,
                                            "prediction_batches_deleted": 0}
    assert rows_about(store, plog, "alice@example.com") == {"predictions": 0, "feedback": 0, "batch_inputs": 0}
    assert not {ids[0], ids[2], ids[4], ids[6]} & {r[0] for r in store.fetch("SELECT id FROM feedback")}
    database = store.path.read_bytes() + b"".join(p.read_bytes() for p in store.path.parent.glob("*.sqlite-wal"))
    assert b"alice@example.com" not in database and b"bob@example.com" not in database  # never stored raw
    report = client.get("/v1/models/people/monitoring?window=10", headers={"X-API-Key": reader})
    assert report.status_code == 200 and report.get_json()["versions"]["1"]["n"] == 4
    window = plog.window("people", 1, features=app.extensions["catalog"].model("people").available(1).features)
    assert sorted(window.columns["x"].tolist()) == [1.0, 1.0, 3.0, 3.0]  # bob's and carol's own rows, renumbered right
    records = audit.find(store, "subject.erase")
    assert len(records) == 1 and records[0].actor == "key:dpo" and records[0].details["deleted"]["predictions"] == 4
    assert "alice" not in json.dumps([r.__dict__ for r in records]) and audit.verify(store).ok


def test_unknown_subjects_answer_zero_and_the_endpoint_is_admin_only(served):
    _, client, admin, _, predict_and_read = served
    zero = client.post("/v1/subjects:erase", headers={"X-API-Key": admin}, json={"subject": "nobody", "model": "people"})
    assert zero.status_code == 200 and set(zero.get_json()["deleted"].values()) == {0}
    assert client.post("/v1/subjects:erase", headers={"X-API-Key": predict_and_read},
                       json={"subject": "alice@example.com"}).status_code == 403
    for bad in ({}, {"subject": ""}, {"subject": True}, {"subject": "a", "model": "../x"}, {"subject": "a", "x": 1}):
        assert client.post("/v1/subjects:erase", headers={"X-API-Key": admin}, json=bad).status_code == 422
    form = client.post("/v1/subjects:erase", headers={"X-API-Key": admin}, data="subject=alice",
                       content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415


def test_erasing_from_the_command_line_leaves_no_row_and_is_audited(served, monkeypatch):
    app, *_ = served
    store, plog = app.extensions["store"], app.extensions["prediction_log"]
    for name in SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PII_HASH_KEY", KEY)
    result = CliRunner().invoke(cli, ["erase", "--subject", "bob@example.com", "--model", "people",
                                      "--database-url", f"sqlite:///{store.path}"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ("predictions: 2 deleted, feedback: 2 deleted, "
                                     "prediction_batches: 2 rewritten, 0 deleted")
    assert rows_about(store, plog, "bob@example.com") == {"predictions": 0, "feedback": 0, "batch_inputs": 0}
    assert rows_about(store, plog, "carol@example.com")["predictions"] == 2
    (record,) = audit.find(store, "subject.erase")
    assert record.actor.startswith("cli:") and record.details == {"model": "people", "deleted": {
        "predictions": 2, "feedback": 2, "prediction_batches_rewritten": 2, "prediction_batches_deleted": 0}}
    assert audit.verify(store).ok
