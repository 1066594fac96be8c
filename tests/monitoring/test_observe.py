"""One watch around each inference: the outcome is recorded through ``defer``, never in the answer's way."""

from __future__ import annotations

import pytest

from service.errors import ModelNotFound
from service.monitoring.observe import Observer
from service.protocols import v1
from service.serving import inference
from service.serving.catalog import Catalog
from service.serving.inference import Limits, Target
from service.store import Store

LIMITS = Limits(max_rows=100, vectorized_min_rows=64)


@pytest.fixture
def observer(tmp_path):
    return Observer(Store(tmp_path / "db.sqlite"))


def requests_of(observer, model):
    return {r["request_id"]: dict(r) for r in observer.store.requests_since(model, 0)}


def test_nothing_is_recorded_until_the_deferred_work_runs(observer, artifact_root):
    catalog = Catalog(artifact_root)
    catalog.refresh()
    deferred = []
    target = Target("diabetes")
    with observer.watch(target, "req-ok", deferred.append) as watch:
        request = v1.decode({"instances": [[50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90]]}, target, max_rows=100)
        answer = watch.answered(inference.predict(catalog, request, LIMITS))
    assert requests_of(observer, "diabetes") == {} and len(deferred) == 1
    deferred[0]()
    row = requests_of(observer, "diabetes")["req-ok"]
    assert (row["status"], row["version"], row["rows"]) == (200, answer.version, 1)


@pytest.mark.parametrize(("error", "status", "code"), [
    (ModelNotFound(details={"model": "nope"}), 404, "model_not_found"),
    (RuntimeError("a bug"), 500, "internal_error"),
])
def test_an_error_is_recorded_once_with_its_status_and_raised_unchanged(observer, error, status, code):
    deferred = []
    with pytest.raises(type(error)) as raised, observer.watch(Target("nope"), "req-bad", deferred.append):
        raise error
    assert raised.value is error and len(deferred) == 1
    deferred[0]()
    row = requests_of(observer, "nope")["req-bad"]
    assert (row["status"], row["error"], row["role"]) == (status, code, "error")


def test_a_watch_left_without_an_answer_records_nothing(observer):
    deferred = []
    with observer.watch(Target("diabetes"), "req-none", deferred.append):
        pass
    assert deferred == []
