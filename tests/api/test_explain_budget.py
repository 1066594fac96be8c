"""What an explanation may cost over HTTP: the row limit (422 before any work), one per worker (503), the rate charge."""

from __future__ import annotations

import threading

import pytest

from service import explain
from service.explain.cost import Cost
from service.serving import runtime
from tests.api.test_predict import payloads, rows_of

EXPLAIN = "/v1/models/diabetes:explain"


def no_model_work(monkeypatch):
    """Make any prediction or explanation fail the test: a refusal must come before them."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the model ran for a refused request")
    monkeypatch.setattr(runtime.LoadedModel, "predict", refuse)
    monkeypatch.setattr(explain, "explain", refuse)


def test_rows_over_the_budget_are_refused_before_any_work(make_app, monkeypatch):
    client = make_app(explain_max_seconds=1e-9).test_client()  # any measured cost: one row per request
    assert client.post(EXPLAIN, json=payloads(rows_of("diabetes", 1))["records"]).status_code == 200
    no_model_work(monkeypatch)
    reply = client.post(EXPLAIN, json=payloads(rows_of("diabetes", 3))["records"])
    assert reply.status_code == 422, reply.get_json()
    error = reply.get_json()["error"]
    assert error["code"] == "too_many_rows_to_explain"
    details = error["details"]
    assert details["rows"] == 3 and details["max_rows"] == 1 and details["limited_by"] == "EXPLAIN_MAX_SECONDS"
    assert details["seconds_per_row"] > 0 and details["cost_factor"] >= 1
    assert "EXPLAIN_MAX_SECONDS=1e-09 s over" in details["derivation"] and "at most 1 rows" in error["message"]


def test_predict_with_the_explain_parameter_is_held_to_the_same_limit(make_app, monkeypatch):
    client = make_app(explain_max_seconds=1e-9).test_client()
    no_model_work(monkeypatch)
    body = {**payloads(rows_of("diabetes", 2))["rows"], "parameters": {"explain": True}}
    reply = client.post("/v1/models/diabetes/versions/1:predict", json=body)
    assert reply.status_code == 422 and reply.get_json()["error"]["code"] == "too_many_rows_to_explain"


def test_a_hard_row_limit_applies_whatever_the_cost(make_app):
    client = make_app(explain_max_rows=3).test_client()
    assert client.post(EXPLAIN, json=payloads(rows_of("diabetes", 3))["columns"]).status_code == 200
    reply = client.post(EXPLAIN, json=payloads(rows_of("diabetes", 4))["columns"])
    details = reply.get_json()["error"]["details"]
    assert reply.status_code == 422 and (details["max_rows"], details["limited_by"]) == (3, "EXPLAIN_MAX_ROWS")


def test_the_version_metadata_shows_the_limit(make_app):
    client = make_app(explain_max_seconds=0.25).test_client()
    about = client.get("/v1/models/diabetes/versions/1").get_json()["explanations"]
    assert about["method"] == "linear" and about["exact"] is True
    assert about["max_seconds"] == 0.25 and about["seconds_per_row"] > 0 and about["cost_factor"] >= 1
    assert about["max_rows"] >= 1 and about["limited_by"] in ("EXPLAIN_MAX_SECONDS", "MAX_BATCH_ROWS")
    # the limit the metadata shows is the one enforced: max_rows passes, one more is refused
    if about["max_rows"] < 10_000:
        assert client.post(EXPLAIN, json=payloads(rows_of("diabetes", about["max_rows"]))["rows"]).status_code == 200
        assert client.post(EXPLAIN, json=payloads(rows_of("diabetes", about["max_rows"] + 1))["rows"]).status_code == 422


def test_a_second_explanation_in_the_same_worker_is_refused_at_once(app, monkeypatch):
    client = app.test_client()
    started, release = threading.Event(), threading.Event()
    real = explain.explain

    def slow(model, columns):
        started.set()
        assert release.wait(10)
        return real(model, columns)

    monkeypatch.setattr(explain, "explain", slow)
    body = payloads(rows_of("diabetes", 2))["records"]
    first: dict = {}
    running = threading.Thread(target=lambda: first.update(reply=app.test_client().post(EXPLAIN, json=body)))
    running.start()
    try:
        assert started.wait(10)
        busy = client.post(EXPLAIN, json=body)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.get_json()["error"]["code"] == "explain_busy"
        logged = client.post("/v1/models/diabetes:predict", json={**body, "parameters": {"explain": True}})
        assert logged.status_code == 503  # predict asking for explanations takes the same slot
        assert client.post("/v1/models/diabetes:predict", json=body).status_code == 200  # predictions go on
        assert client.get("/healthz").status_code == 200
    finally:
        release.set()
        running.join(10)
    assert first["reply"].status_code == 200
    assert client.post(EXPLAIN, json=body).status_code == 200  # the slot is free again


@pytest.fixture
def priced(monkeypatch):
    """Every version costs ``factor`` predicted rows per explained row."""
    def set_factor(factor: float) -> None:
        monkeypatch.setattr(explain, "cost_of", lambda _model: Cost("linear", factor * 1e-6, 1e-6, 256, 4096))
    return set_factor


def test_explanations_are_charged_rows_times_their_cost(make_app, priced):
    priced(40)
    client = make_app(rate_limit_rows=0.001, max_batch_rows=100).test_client()  # burst = 100 rows, no refill
    assert client.post(EXPLAIN, json=payloads(rows_of("diabetes", 2))["records"]).status_code == 200  # 80
    refused = client.post(EXPLAIN, json=payloads(rows_of("diabetes", 1))["records"])  # 40 more: over
    assert refused.status_code == 429 and refused.get_json()["error"]["details"]["cost"] == 40
    # predictions are charged one unit a row, as before
    assert client.post("/v1/models/diabetes:predict", json=payloads(rows_of("diabetes", 20))["rows"]).status_code == 200
    again = client.post("/v1/models/diabetes:predict", json=payloads(rows_of("diabetes", 1))["rows"])
    assert again.status_code == 429 and again.get_json()["error"]["details"]["cost"] == 1


def test_an_explanation_costing_more_than_the_burst_empties_the_bucket_instead_of_never_passing(make_app, priced):
    priced(1000)
    client = make_app(rate_limit_rows=0.001, max_batch_rows=100).test_client()
    assert client.post(EXPLAIN, json=payloads(rows_of("diabetes", 1))["records"]).status_code == 200
    refused = client.post("/v1/models/diabetes:predict", json=payloads(rows_of("diabetes", 1))["rows"])
    assert refused.status_code == 429
