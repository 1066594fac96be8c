"""A model that answers NaN or infinity fails like a model that raises: never a ``null`` prediction."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from service.errors import InputOutOfDomain, ModelOutputInvalid, PredictionFailed, ValidationFailed
from service.models import registry
from service.models.auto_rollback import evaluate
from service.models.comparison import version_figures
from service.models.packaging import package_model
from service.monitoring.observe import Observer, compare_shadow
from service.protocols import v1
from service.serving import inference
from service.serving.catalog import Catalog
from service.serving.inference import MAX_ROWS_NAMED, Limits, Target, check_output
from service.serving.runtime import Prediction
from service.store import Store
from tests.faulty_models import (
    INF_TRIGGER,
    NAN_TRIGGER,
    NEG_INF_TRIGGER,
    TRIGGER,
    NonFiniteClassifier,
    NonFiniteRegressor,
    RaisingRegressor,
    SumRegressor,
)

LIMITS = Limits(max_rows=1000, vectorized_min_rows=64)
X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
TRIGGERS = {"nan": NAN_TRIGGER, "inf": INF_TRIGGER, "-inf": NEG_INF_TRIGGER}


def predict(catalog: Catalog, rows: list[list[float]], name: str = "poisoned", **parameters) -> inference.Answer:
    payload = {"instances": rows, **({"parameters": parameters} if parameters else {})}
    return inference.predict(catalog, v1.decode(payload, Target(name), max_rows=LIMITS.max_rows), LIMITS)


def _catalog(root) -> Catalog:
    catalog = Catalog(root)
    catalog.refresh()
    return catalog


def versions(root, name: str, *models, fallback: int | None = None, arrays: bool = True) -> None:
    """Package ``models`` as versions 1, 2, ... of ``name`` (fitted on X), the first in production."""
    y = pd.Series([1.5, 2.1, 3.2, 4.3]) if arrays else X["a"] + X["b"]
    for model in models:
        data = X.to_numpy() if arrays else X
        registry.record_packaged(root, package_model(model.fit(data, y), name, root, X, y), actor="test")
    if fallback is not None:
        registry.set_rollout(root, name, fallback=fallback, actor="test")


@pytest.fixture
def poisoned(tmp_path):
    """Model "poisoned": v1 (production) answers NaN/inf for trigger rows, v2 never does; no rollout yet."""
    versions(tmp_path, "poisoned", NonFiniteRegressor(), SumRegressor())
    return tmp_path


@pytest.fixture
def proba(tmp_path):
    """Model "proba": a classifier whose labels are fine and whose probabilities are NaN for trigger rows."""
    y = pd.Series([0, 1, 0, 1])
    manifest = package_model(NonFiniteClassifier().fit(X.to_numpy(), y), "proba", tmp_path, X, y)
    registry.record_packaged(tmp_path, manifest, actor="test")
    return _catalog(tmp_path)


@pytest.mark.parametrize("kind", TRIGGERS)
def test_a_non_finite_prediction_is_a_model_failure_naming_rows_not_values(poisoned, kind):
    rows = [[1.0, 1.0], [TRIGGERS[kind], 0.25], [2.0, 0.5]]
    with pytest.raises(ModelOutputInvalid) as caught:
        predict(_catalog(poisoned), rows)
    error = caught.value
    assert isinstance(error, PredictionFailed) and error.status == 500 and error.code == "model_output_invalid"
    details = error.details
    assert details["model"] == "poisoned" and details["version"] == 1 and details["rows"] == 3
    assert details["outputs"]["predictions"]["rows"] == 1 and details["row_positions"] == [1]
    assert details["outputs"]["predictions"]["nan" if kind == "nan" else "infinity"] == 1
    assert "predictions for 1 of 3 rows" in error.message
    said = error.message + orjson.dumps(error.details).decode()
    assert str(TRIGGERS[kind]) not in said and "0.25" not in said and str(int(TRIGGERS[kind])) not in said


def test_finite_rows_of_the_same_model_answer_as_usual(poisoned):
    answer = predict(_catalog(poisoned), [[1.0, 1.0], [2.0, 0.5]])
    assert answer.version == 1 and answer.role == "production"
    assert answer.result.predictions.tolist() == [2.0, 2.5]


def test_non_finite_probabilities_fail_only_when_probabilities_are_asked_for(proba):
    rows = [[NAN_TRIGGER, 0.0], [1.0, 0.0], [INF_TRIGGER, 0.0]]
    assert predict(proba, rows, "proba").result.predictions.tolist() == [1, 1, 1]
    with pytest.raises(ModelOutputInvalid) as caught:
        predict(proba, rows, "proba", probabilities=True)
    details = caught.value.details
    assert details["outputs"] == {"probabilities": {"rows": 2, "nan": 2, "infinity": 2}}
    assert details["row_positions"] == [0, 2] and "probabilities for 2 of 3 rows" in caught.value.message


def test_the_fallback_version_answers_instead_and_the_answer_says_so(poisoned):
    registry.set_rollout(poisoned, "poisoned", fallback=2, actor="test")
    answer = predict(_catalog(poisoned), [[1.0, 1.0], [NAN_TRIGGER, 0.0], [INF_TRIGGER, 0.0]])
    assert answer.version == 2 and answer.role == "fallback" and answer.fallback_from == 1
    assert answer.result.predictions.tolist() == [2.0, NAN_TRIGGER, INF_TRIGGER]
    body = orjson.loads(orjson.dumps(v1.encode(answer), option=orjson.OPT_SERIALIZE_NUMPY))
    assert body["fallback"] == {"from_version": 1, "reason": "error"} and None not in body["predictions"]


def test_a_fallback_that_answers_nan_too_fails_in_its_own_name(tmp_path):
    versions(tmp_path, "poisoned", NonFiniteRegressor(), NonFiniteRegressor(), fallback=2)
    with pytest.raises(ModelOutputInvalid) as caught:
        predict(_catalog(tmp_path), [[NAN_TRIGGER, 0.0]])
    assert caught.value.details["version"] == 2


class _LateFuture(Future):
    """A future that misses any deadline it is given, then answers: a version over its time budget."""

    def result(self, timeout=None):
        if timeout is not None:
            raise FutureTimeout()
        return super().result()


class _LateExecutor:
    def submit(self, fn, *args):
        future = _LateFuture()
        future.set_result(fn(*args))
        return future


def test_a_late_answer_without_a_fallback_is_checked_too(poisoned):
    registry.set_rollout(poisoned, "poisoned", budget_ms=50, actor="test")
    catalog = _catalog(poisoned)
    request = v1.decode({"instances": [[NAN_TRIGGER, 0.0]]}, Target("poisoned"), max_rows=LIMITS.max_rows)
    with pytest.raises(ModelOutputInvalid):
        inference.predict(catalog, request, LIMITS, executor=_LateExecutor())
    finite = v1.decode({"instances": [[1.0, 0.0]]}, Target("poisoned"), max_rows=LIMITS.max_rows)
    assert inference.predict(catalog, finite, LIMITS, executor=_LateExecutor()).result.predictions.tolist() == [1.0]


def test_the_observer_records_it_as_an_error_of_the_version_that_failed(poisoned):
    store = Store(poisoned / "db.sqlite")
    observer = Observer(store)
    with pytest.raises(ModelOutputInvalid), observer.watch(Target("poisoned"), "req-nan"):
        predict(_catalog(poisoned), [[NAN_TRIGGER, 0.0]])
    observer.close()
    row = dict(next(r for r in store.requests_since("poisoned", 0) if r["request_id"] == "req-nan"))
    assert (row["status"], row["error"], row["version"], row["role"]) == (500, "model_output_invalid", 1, "error")


def test_a_shadow_that_answers_nan_is_a_failed_comparison_not_a_nan_difference(poisoned):
    registry.set_rollout(poisoned, "poisoned", fallback=2, actor="test")
    catalog = _catalog(poisoned)
    answer = predict(catalog, [[NAN_TRIGGER, 0.0]])  # v2 answers; v1 is then compared as a shadow would be
    record = compare_shadow(answer, catalog.resolve("poisoned", 1), "poisoned")
    assert record.error == "ModelOutputInvalid" and record.mean_abs_diff is None


@pytest.mark.parametrize("values", [
    np.array([0, 1, 1]), np.array([True, False, True]), np.array(["high", "low", "low"]),
    np.array(["high", "low", "low"], dtype=object), np.array([0.5, -1e308, 1e308]),
], ids=["int", "bool", "str", "object", "huge-float"])
def test_labels_and_finite_numbers_pass_untouched(values):
    result = Prediction(values, np.array([[0.2, 0.8]] * 3), None)
    assert check_output(_model(), result) is result


def test_a_missing_label_in_an_object_array_is_refused_too():
    with pytest.raises(ModelOutputInvalid) as caught:
        check_output(_model(), Prediction(np.array(["a", None, "b"], dtype=object), None, None))
    assert caught.value.details["outputs"] == {"predictions": {"rows": 1, "missing": 1}}


def test_a_large_batch_names_a_bounded_number_of_rows():
    values = np.full(10_000, np.nan)
    with pytest.raises(ModelOutputInvalid) as caught:
        check_output(_model(), Prediction(values, None, None))
    assert caught.value.details["row_positions"] == list(range(MAX_ROWS_NAMED))
    assert caught.value.details["outputs"]["predictions"]["rows"] == 10_000


def test_multi_output_predictions_count_rows_not_cells():
    values = np.array([[1.0, np.nan], [np.inf, -np.inf], [0.0, 1.0]])
    with pytest.raises(ModelOutputInvalid) as caught:
        check_output(_model(), Prediction(values, None, None))
    assert caught.value.details["outputs"]["predictions"] == {"rows": 2, "nan": 1, "infinity": 2}
    assert caught.value.details["row_positions"] == [0, 1]


def _model():
    class Model:
        name, version = "m", 3
    return Model()


# -- inputs far outside the training data: the client's doing, not the model's ----------------------

HUGE = 1e308  # what a fuzzer sends: finite, but a sum of two overflows


@pytest.fixture
def linear(tmp_path):
    """Model "linear": v1 (production) a healthy LinearRegression (a + b), v2 its fallback; trained on a in [1, 4]."""
    versions(tmp_path, "linear", LinearRegression(), SumRegressor(), fallback=2, arrays=False)
    return tmp_path


def test_a_healthy_model_given_huge_inputs_refuses_them_naming_fields_not_values(linear):
    rows = [[1.0, 1.0], [HUGE, HUGE], [2.0, 0.5], [-HUGE, -HUGE]]
    with pytest.raises(InputOutOfDomain) as caught:
        predict(_catalog(linear), rows, "linear")  # the fallback is configured, and does not answer
    error = caught.value
    assert error.status == 422 and error.code == "input_out_of_domain" and isinstance(error, ValidationFailed)
    assert not isinstance(error, PredictionFailed)
    details = error.details
    assert (details["model"], details["version"], details["rows"]) == ("linear", 1, 4)
    assert details["row_positions"] == [1, 3] and details["fields"] == ["a", "b"]
    assert [(e["row"], e["field"]) for e in details["errors"]] == [(1, "a"), (1, "b"), (3, "a"), (3, "b")]
    assert details["error_count"] == 4 and "no finite answer for 2 of 4 rows" in error.message
    said = error.message + orjson.dumps(details).decode()
    assert "1e+308" not in said and "e308" not in said and "308" not in said


def test_only_the_fields_that_are_far_are_named(tmp_path):
    y = 2 * X["a"] + X["b"]  # 2 x 1e308 overflows, 1e308 + 1 does not
    registry.record_packaged(tmp_path, package_model(LinearRegression().fit(X, y), "double", tmp_path, X, y), actor="test")
    with pytest.raises(InputOutOfDomain) as caught:
        predict(_catalog(tmp_path), [[1.0, 1.0], [HUGE, 1.0], [HUGE, 100.0]], "double")
    details = caught.value.details
    assert details["fields"] == ["a"] and details["row_positions"] == [1, 2]
    assert [(e["row"], e["field"]) for e in details["errors"]] == [(1, "a"), (2, "a")]


def test_huge_inputs_and_healthy_ones_together_answer_only_when_all_are_finite(linear):
    answer = predict(_catalog(linear), [[1e6, 1e6], [2.0, 0.5]], "linear")  # far, but the model copes
    assert answer.version == 1 and answer.role == "production"
    assert answer.result.predictions == pytest.approx([2e6, 2.5])


@pytest.mark.parametrize("b, refused", [(999.0, ModelOutputInvalid), (1001.0, InputOutOfDomain)],
                         ids=["within-1000x", "beyond-1000x"])
def test_far_means_beyond_a_thousand_times_the_training_magnitude(poisoned, b, refused):
    # b was trained on [0.1, 0.5], so its bound is 1000 x max(0.5, 1); a's trigger 888 is within a's (4000)
    with pytest.raises(refused):
        predict(_catalog(poisoned), [[INF_TRIGGER, b]])


def test_a_broken_model_on_ordinary_rows_is_still_its_own_failure_even_beside_far_rows(poisoned):
    registry.set_rollout(poisoned, "poisoned", fallback=2, actor="test")
    answer = predict(_catalog(poisoned), [[NAN_TRIGGER, 0.0], [INF_TRIGGER, 1e6]])
    assert answer.role == "fallback" and answer.fallback_from == 1  # row 0 is ordinary: the model is at fault
    with pytest.raises(InputOutOfDomain):  # every non-finite row is far: no fallback
        predict(_catalog(poisoned), [[1.0, 0.0], [INF_TRIGGER, 1e6]])


def test_the_observer_records_a_client_error_the_rollout_guard_does_not_count(linear):
    store = Store(linear / "db.sqlite")
    observer = Observer(store)
    with pytest.raises(InputOutOfDomain), observer.watch(Target("linear"), "req-huge"):
        predict(_catalog(linear), [[HUGE, HUGE]], "linear")
    observer.close()
    rows = [dict(r) for r in store.requests_since("linear", 0)]
    row = next(r for r in rows if r["request_id"] == "req-huge")
    assert (row["status"], row["error"], row["version"]) == (422, "input_out_of_domain", 1)
    figures = version_figures(rows)[1]
    assert (figures["errors"], figures["client_errors"], figures["fallbacks_from"]) == (0, 1, 0)
    assert evaluate({"min_requests": 1, "max_error_rate": 0.0}, figures) == []


def test_bounds_come_from_the_reference_profile_pii_edges_or_declared_bounds():
    manifest = {"input": {"features": [
        {"name": "x", "type": "float"}, {"name": "salary", "type": "float", "pii": True},
        {"name": "age", "type": "int", "min": 0, "max": 130}, {"name": "city", "type": "category"},
        {"name": "unknown", "type": "float"}, {"name": "tiny", "type": "float"},
    ]}, "reference_profile": {"features": {
        "x": {"kind": "numeric", "min": -20.0, "max": 5.0, "bin_edges": [-20.0, 0.0, 5.0]},
        "salary": {"kind": "numeric", "pii": True, "bin_edges": [20000.0, 31000.0, 90000.0]},
        "tiny": {"kind": "numeric", "min": 0.001, "max": 0.002},
        "city": {"kind": "categorical", "categories": {"a": 1.0}},
    }}}
    bounds = inference.input_bounds(manifest)
    assert bounds == {"x": 20_000.0, "salary": 90_000_000.0, "age": 130_000.0, "tiny": 1000.0}
    assert inference.input_bounds(manifest) is bounds  # built once per manifest


def test_the_message_names_a_few_fields_and_the_details_all(tmp_path):
    wide = pd.DataFrame({f"f{i}": X["a"] for i in range(8)})
    y = wide.sum(axis=1)
    registry.record_packaged(tmp_path, package_model(LinearRegression().fit(wide, y), "wide", tmp_path, wide, y),
                             actor="test")
    with pytest.raises(InputOutOfDomain) as caught:
        predict(_catalog(tmp_path), [[HUGE] * 8], "wide")
    assert caught.value.details["fields"] == [f"f{i}" for i in range(8)] and caught.value.details["error_count"] == 8
    assert "(in f0, f1, f2, f3, f4 and 3 more)" in caught.value.message


@pytest.fixture
def raising(tmp_path):
    """Model "raising": v1 (production) raises on a row holding 999 (trained on a in [1, 4], b under 1), v2 its fallback."""
    versions(tmp_path, "raising", RaisingRegressor(), SumRegressor(), fallback=2)
    return _catalog(tmp_path)


def test_a_model_that_raises_on_ordinary_rows_is_its_own_failure(raising):
    answer = predict(raising, [[TRIGGER, 0.2]], "raising")  # 999 is within 1000x the training magnitude of a
    assert answer.role == "fallback" and answer.fallback_from == 1


def test_a_model_that_raises_on_a_batch_with_far_rows_refuses_them_without_a_fallback(raising):
    with pytest.raises(InputOutOfDomain) as refused:
        predict(raising, [[1.0, 0.2], [TRIGGER, 1e6]], "raising")
    details = refused.value.details
    assert (details["row_positions"], details["fields"], details["rows"]) == ([1], ["b"], 2)
    assert "failed on a batch where 1 of 2 rows" in refused.value.message and "1000000" not in str(details)
