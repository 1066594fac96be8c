"""What an explained row costs a version, the row limit it gives, and the one measurement the workers share."""

from __future__ import annotations

import json
import time

import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from service import explain
from service.explain import cost as cost_module
from service.explain import cost_file
from service.explain.cost import Cost, measure, row_limit
from service.serving.catalog import AVAILABLE, Catalog
from tests.builders import package, race
from tests.explain.helpers import cancer, loaded


class FakeClock:
    """``time.thread_time`` for the measurement: each call of a timed function adds its cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def costing(self, fixed: float, per_row: float, calls: list[int]):
        def run(rows: dict) -> None:
            calls.append(len(rows["x"]))
            self.now += fixed + per_row * len(rows["x"])
        return run


def rows(n: int) -> dict:
    return {"x": list(range(n))}


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(cost_module.time, "thread_time", fake)
    return fake


def test_an_expensive_method_is_timed_on_a_few_rows_and_a_cheap_predict_on_many(clock):
    explained, predicted = [], []
    found = measure("tree_shap", clock.costing(0.001, 0.005, explained), clock.costing(0.0005, 1e-6, predicted), rows)
    # one untimed row first, then doubling until a step takes at least MIN_STEP_SECONDS (0.081 s on 16 rows)
    assert explained == [1, 1, 2, 4, 8, 16]
    assert found.explain_seconds_per_row == pytest.approx((0.001 + 0.08) / 16) and found.explain_rows == 16
    assert predicted[-1] == cost_module.PREDICT_ROWS_CAP and len(predicted) == 14
    assert found.predict_seconds_per_row == pytest.approx((0.0005 + 0.004096) / 4096)
    assert found.factor == pytest.approx(found.explain_seconds_per_row / found.predict_seconds_per_row)


def test_the_measurement_stays_bounded_for_a_method_slow_on_one_row(clock):
    explained = []
    found = measure("sampled_permutation", clock.costing(0, 2.0, explained), clock.costing(0, 1e-6, []), rows)
    assert explained == [1, 1] and found.explain_seconds_per_row == pytest.approx(2.0)


def test_without_reference_rows_nothing_is_measured(clock):
    assert measure("linear", clock.costing(0, 1, []), clock.costing(0, 1, []), lambda n: None) is None


def test_an_explained_row_costs_at_least_one_predicted_row():
    assert Cost("linear", 1e-7, 1e-6, 256, 4096).factor == 1.0
    assert Cost("tree_shap", 5e-3, 1e-5, 4, 4096).factor == pytest.approx(500)


def test_the_limit_is_the_budget_over_the_cost_per_row_and_says_so():
    cost = Cost("tree_shap", 0.005, 1e-5, 4, 4096)
    limit = row_limit(cost, max_seconds=0.25, max_rows=0, batch_rows=10_000, method_rows=1000)
    assert (limit.rows, limit.by) == (50, "EXPLAIN_MAX_SECONDS")
    shown = limit.to_dict()
    assert shown["max_rows"] == 50 and shown["seconds_per_row"] == 0.005 and shown["cost_factor"] == 500
    assert "EXPLAIN_MAX_SECONDS=0.25 s over 5 ms" in shown["derivation"]


@pytest.mark.parametrize(("max_seconds", "max_rows", "method_rows", "expected"), [
    (10.0, 0, None, (10_000, "MAX_BATCH_ROWS")),  # a cheap model: the batch limit is the limit
    (10.0, 300, None, (300, "EXPLAIN_MAX_ROWS")),
    (10.0, 0, 20, (20, "method")),
    (1e-9, 0, None, (1, "EXPLAIN_MAX_SECONDS")),  # never below one row
    (0.0, 0, None, (10_000, "MAX_BATCH_ROWS")),  # 0 = no cost limit
])
def test_the_smallest_limit_wins(max_seconds, max_rows, method_rows, expected):
    limit = row_limit(Cost("m", 1e-4, 1e-6, 256, 4096), max_seconds=max_seconds, max_rows=max_rows,
                      batch_rows=10_000, method_rows=method_rows)
    assert (limit.rows, limit.by) == expected


def test_an_unmeasured_version_explains_one_row_at_a_time():
    limit = row_limit(None, max_seconds=0.25, max_rows=0, batch_rows=10_000)
    assert (limit.rows, limit.by) == (1, "unmeasured") and "could not be measured" in limit.describe()


def test_preparing_measures_a_real_forest_within_a_bounded_time():
    X, y = cancer()
    forest = loaded(RandomForestClassifier(n_estimators=100, random_state=0), X, y)
    linear = loaded(LogisticRegression(max_iter=5000), X, y)
    for model in (forest, linear):
        started = time.thread_time()
        found = explain.prepare(model)
        assert time.thread_time() - started < 5.0  # generous: the measuring itself is capped near 0.3 s
        assert explain.cost_of(model) is found and found.explain_seconds_per_row > 0
    assert explain.cost_of(forest).method == "tree_shap" and explain.cost_of(linear).method == "linear"
    # TreeSHAP on 100 trees costs far more per row than the linear model, and far more than predicting it
    assert explain.cost_of(forest).explain_seconds_per_row > 10 * explain.cost_of(linear).explain_seconds_per_row
    assert explain.cost_of(forest).factor > 10
    budget = explain.Budget(max_seconds=0.25, max_rows=0, batch_rows=10_000)
    assert explain.limit_for(forest, budget).rows < explain.limit_for(linear, budget).rows


def _measure_once(barrier, results, path, log):
    def slow_measure():
        with open(log, "a") as out:
            out.write("measured\n")
        time.sleep(0.2)
        return Cost("tree_shap", 0.005, 1e-5, 4, 4096)

    barrier.wait()
    results.put(cost_file.shared(path, slow_measure).to_dict())


def test_workers_share_one_measurement_per_version(tmp_path):
    path, log = cost_file.path_for(tmp_path, "m", 1, "ab" * 32), tmp_path / "measured.log"
    found = race(_measure_once, (path, log), processes=3)  # worker processes: fcntl locks are per process
    assert log.read_text().count("measured") == 1 and found == [found[0]] * 3
    assert json.loads(path.read_text())["explain_seconds_per_row"] == 0.005


def test_a_torn_cost_file_is_measured_again(tmp_path):
    path = cost_file.path_for(tmp_path, "m", 1, "cd" * 32)
    path.write_text('{"method": "tree_shap", "explain_seconds_per_row": -1')
    fresh = Cost("linear", 1e-6, 1e-7, 256, 4096)
    assert cost_file.shared(path, lambda: fresh) == fresh
    assert Cost.from_dict(json.loads(path.read_text())) == fresh


def test_a_version_loads_even_when_preparing_it_fails(tmp_path):
    package(tmp_path, "m")

    def broken(_model):
        raise RuntimeError("boom")

    catalog = Catalog(tmp_path, poll_seconds=0, prepare=broken)
    catalog.refresh()
    assert catalog.model("m").versions[1].status == AVAILABLE


def test_the_catalog_prepares_each_version_as_it_loads(tmp_path):
    package(tmp_path, "m")
    catalog = Catalog(tmp_path, poll_seconds=0, prepare=explain.preparer(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    catalog.refresh()
    model = catalog.resolve("m", 1)
    assert explain.cost_of(model) is not None and explain.cost_of(model).method == "linear"
    assert len(list((tmp_path / "shared").glob("explain-cost-m-1-*.json"))) == 1


def test_a_model_that_waits_is_measured_within_a_second_of_the_clock(monkeypatch):
    """A model whose predict sleeps uses no CPU, so only the clock can stop the doubling."""
    import time as clock

    from service.explain import cost

    calls = []

    def sleepy(data):
        calls.append(data)
        clock.sleep(0.15)

    started = clock.monotonic()
    measured = cost._per_row(sleepy, lambda n: {"x": [0.0] * n}, cap=4096)
    assert clock.monotonic() - started < cost.MEASURE_WALL_SECONDS + 0.5
    assert measured is not None and len(calls) < 10
    assert cost._per_row(lambda data: clock.sleep(1.1), lambda n: {"x": [0.0] * n}, cap=4096) is None
