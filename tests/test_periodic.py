"""The periodic daemon thread behind polling, the rollout guard and the alert loop."""

from __future__ import annotations

import logging
import threading
import time

from service.periodic import Periodic


def test_runs_again_after_a_failure_and_stops(caplog):
    calls = []
    ran_three = threading.Event()

    def job():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        if len(calls) == 3:
            ran_three.set()

    loop = Periodic("test-job", 0.01, job)
    with caplog.at_level(logging.ERROR):
        loop.start()
        loop.start()  # idempotent: still one thread
        assert ran_three.wait(5)
        loop.stop()
    assert not loop.running
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count  # nothing runs after stop
    assert [r.job for r in caplog.records if r.message.startswith("periodic job failed")] == ["test-job"]


def test_wait_first_delays_the_first_call():
    calls = []
    loop = Periodic("late", 0.2, lambda: calls.append(1), wait_first=True)
    loop.start()
    time.sleep(0.05)
    assert calls == []
    loop.stop()
    assert calls == []  # stopped during the first wait: never ran


def test_a_job_that_outlives_stop_is_never_doubled():
    release = threading.Event()
    running = []

    def slow():
        running.append(1)
        release.wait(5)

    loop = Periodic("slow", 0.01, slow)
    loop.start()
    while not running:
        time.sleep(0.01)
    loop.stop(timeout=0.05)  # the job is still inside slow()
    try:
        import pytest

        with pytest.raises(RuntimeError, match="has not stopped yet"):
            loop.start()
    finally:
        release.set()
    loop.stop()
    assert not loop.running
