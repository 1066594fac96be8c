"""A logged prediction is explained again from what the log kept, in either encoding of its record."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression

from service.explain import explain, past
from service.monitoring.predlog import PredictionLog
from tests.explain.helpers import cancer, columns_of, loaded


@pytest.fixture
def model():
    X, y = cancer()
    return loaded(LogisticRegression(max_iter=5000), X, y)


def test_a_row_of_a_binary_record_is_explained_as_it_was_served(make_store, model):
    X, _ = cancer()
    store = make_store()
    rows = X.iloc[:20]
    columns = columns_of(model, rows)
    predictions = model.estimator.predict(rows)
    ids = [f"req-{i}" for i in range(20)]
    assert PredictionLog(store).record("m", 1, "r", ids, columns, predictions,
                                       model.estimator.predict_proba(rows), 1.0, model.features, now=5.0)
    assert isinstance(store.fetch("SELECT arrays FROM prediction_batches")[0][0], bytes)

    logged = past.find(store, "m", "req-7")
    assert logged.inputs == {name: values[7].item() for name, values in columns.items()}
    assert logged.output == predictions[7].item() and type(logged.output) is int
    answer = past.explain_logged(model, logged)
    assert answer["id"] == "req-7" and answer["prediction"] == logged.output
    assert answer["explanation"]["complete"] is True
    served = explain(model, {name: values[7:8] for name, values in columns.items()}).items()[0]
    row = answer["explanations"][0]
    assert {key: row[key] for key in served} == served  # the same contributions as the row explained live
