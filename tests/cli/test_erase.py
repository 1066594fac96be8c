"""``erase`` and ``purge`` from the command line, on a SQLite file the test fills itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from service.cli import cli
from service.monitoring.predlog import PredictionLog
from service.security import audit
from service.store import Store
from tests.builders import logged_ids
from tests.conftest import SCRUBBED_ENV

FEATURES = [{"name": "customer_id", "type": "int", "pii": True}, {"name": "x", "type": "float"}]


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "log.sqlite"
    plog = PredictionLog(Store(path))  # no PII_HASH_KEY: the store's own key
    customers = np.array([7, 8, 7])
    assert plog.record("m", 1, "r", ["r-0", "r-1", "r-2"], {"customer_id": customers, "x": np.zeros(3)}, np.zeros(3),
                       None, 1.0, FEATURES, now=1000.0, subject="customer_id")
    return path


def invoke(*args: str):
    return CliRunner(env={name: None for name in (*SCRUBBED_ENV, "PII_HASH_KEY")}).invoke(cli, list(args))


def test_erase_prints_json_counts_and_matches_an_integer_id_given_as_text(database):
    result = invoke("erase", "--subject", "7", "--json", "--database-url", f"sqlite:///{database}")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["model"] is None and answer["deleted"] == {"predictions": 2, "feedback": 0,
                                                             "prediction_batches_rewritten": 1,
                                                             "prediction_batches_deleted": 0}
    store = Store(database)
    assert logged_ids(store) == ["r-1"]  # keeps its id: nobody else's moves
    (record,) = audit.find(store, "subject.erase")
    assert record.target == f"subject:{answer['subject_hash']}" and len(answer["subject_hash"]) == 64


def test_erase_refuses_a_bad_model_name_in_one_line(database):
    result = invoke("erase", "--subject", "7", "--model", "../etc", "--database-url", f"sqlite:///{database}")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "model names match" in result.output


def test_purge_still_deletes_past_the_retention_age(database):
    result = invoke("purge", "--older-than-days", "1", "--database-url", f"sqlite:///{database}")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("predictions: 3 deleted, feedback: 0 deleted, prediction_batches: 1 deleted")
