"""Monitoring reports over large windows are kept per worker for a while, and computed once however many ask."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.monitoring.report import ReportCache
from tests.builders import wait_until

DIABETES_ROW = {"age": 50, "sex": 1, "bmi": 25.1, "bp": 90.0, "s1": 180.0, "s2": 100.0, "s3": 45.0, "s4": 4.0,
                "s5": 4.5, "s6": 90.0}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def test_a_value_is_kept_for_the_ttl_then_computed_again():
    clock, compute = Clock(), Counting()
    cache = ReportCache(10, clock=clock)
    assert cache.get("k", compute) == 1
    clock.now += 9.9
    assert cache.get("k", compute) == 1
    clock.now += 0.1
    assert cache.get("k", compute) == 2
    assert cache.get("other", compute) == 3


def test_errors_are_not_kept_and_unkept_values_are_not_either():
    cache, compute = ReportCache(10, clock=Clock()), Counting()

    def failing() -> int:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        cache.get("k", failing)
    assert cache.get("k", compute) == 1
    assert cache.get("fresh", compute, keep=False) == 2
    assert cache.get("fresh", compute, keep=False) == 3
    assert ReportCache(0).get("k", compute) == 4 and ReportCache(0).get("k", compute) == 5


def test_the_oldest_keys_go_first_past_max_entries():
    cache, compute = ReportCache(10, clock=Clock(), max_entries=2), Counting()
    for key in ("a", "b", "c"):
        cache.get(key, compute)
    assert cache.get("c", compute) == 3 and cache.get("a", compute) == 4


@pytest.mark.parametrize("keep", [True, False])
def test_parallel_callers_wait_for_one_computation(keep):
    cache = ReportCache(10)
    started, release, calls = threading.Event(), threading.Event(), []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(10)
        return "report"

    with ThreadPoolExecutor(8) as pool:
        leader = pool.submit(cache.get, "k", slow, keep=keep)
        assert started.wait(10)
        followers = [pool.submit(cache.get, "k", slow, keep=keep) for _ in range(7)]
        wait_until(lambda: cache._flights["k"].waiters == 7, message="followers waiting")
        release.set()
        assert leader.result(10) == "report" and [f.result(10) for f in followers] == ["report"] * 7
    assert len(calls) == 1


def test_parallel_callers_share_the_error_too():
    cache = ReportCache(10)
    started, release = threading.Event(), threading.Event()

    def failing() -> str:
        started.set()
        release.wait(10)
        raise RuntimeError("store down")

    with ThreadPoolExecutor(2) as pool:
        leader = pool.submit(cache.get, "k", failing)
        assert started.wait(10)
        follower = pool.submit(cache.get, "k", failing)
        wait_until(lambda: cache._flights["k"].waiters == 1, message="follower waiting")
        release.set()
        for future in (leader, follower):
            with pytest.raises(RuntimeError):
                future.result(10)


# -- the report over HTTP -----------------------------------------------------------------------


def logged(client, window: str) -> int:
    report = client.get(f"/v1/models/diabetes/monitoring?{window}").get_json()
    return sum(v["n"] for v in report["versions"].values())


def test_large_windows_are_cached_and_the_default_stays_fresh(make_app):
    app = make_app(monitoring_cache_seconds=60, monitoring_window=10)
    clock = Clock()
    app.extensions["monitoring"].cache._clock = clock
    client = app.test_client()
    assert client.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW] * 3}).status_code == 200
    wait_until(lambda: logged(client, "window=10") == 3, message="3 predictions logged")
    assert logged(client, "window=1000") == 3
    assert logged(client, "minutes=5") == 3
    assert client.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW] * 2}).status_code == 200
    wait_until(lambda: logged(client, "window=10") == 5, message="5 predictions logged")
    assert logged(client, "window=1000") == 3  # this worker's copy, for up to a minute
    assert logged(client, "minutes=5") == 3
    clock.now += 60
    assert logged(client, "window=1000") == 5
    assert logged(client, "minutes=5") == 5


def test_a_large_report_past_the_slots_is_a_503_at_once_and_small_ones_still_answer(make_app):
    app = make_app(monitoring_large_reports=1, monitoring_window=10)
    client = app.test_client()
    slots = app.extensions["monitoring"].slots
    held = slots.try_acquire()  # another worker computing a large report
    busy = client.get("/v1/models/diabetes/monitoring?window=1000")
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert busy.get_json()["error"]["code"] == "monitoring_busy"
    assert client.get("/v1/models/diabetes/monitoring").status_code == 200  # the default window needs no slot
    slots.release(held)
    assert client.get("/v1/models/diabetes/monitoring?window=1000").status_code == 200
    assert slots.try_acquire() == held  # given back after the report
