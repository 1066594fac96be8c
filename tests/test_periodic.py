"""The periodic daemon thread behind polling, the rollout guard and the alert loop.

No test here depends on how long anything takes: the waits between calls are the tests' own
(``wait=``), and every wait on the thread is an event with a deadline.
"""

from __future__ import annotations

import logging
import threading

import pytest

from service.periodic import Periodic

DEADLINE = 5.0


class Pauses:
    """A ``wait`` for Periodic that records each pause and lets the test decide when it ends."""

    def __init__(self, block: bool) -> None:
        self.block = block
        self.asked: list[float] = []
        self.paused = threading.Event()

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        self.asked.append(seconds)
        self.paused.set()
        # blocking: the pause lasts until stop (a long interval, as far as the loop can tell)
        return stop.wait(DEADLINE if self.block else 0)


def test_runs_again_after_a_failure_and_stops(caplog):
    calls = []
    ran_three = threading.Event()

    def job():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        if len(calls) == 3:
            ran_three.set()

    pauses = Pauses(block=False)
    loop = Periodic("test-job", 0.25, job, wait=pauses)
    with caplog.at_level(logging.ERROR):
        loop.start()
        loop.start()  # idempotent: still one thread
        assert ran_three.wait(DEADLINE)
        loop.stop()
    assert not loop.running  # the thread has ended: nothing can run after stop
    assert set(pauses.asked) == {0.25} and len(pauses.asked) >= 2  # one pause after each call
    count = len(calls)
    loop.stop()
    assert len(calls) == count
    assert [r.job for r in caplog.records if r.message.startswith("periodic job failed")] == ["test-job"]


def test_wait_first_delays_the_first_call():
    calls = []
    pauses = Pauses(block=True)
    loop = Periodic("late", 0.2, lambda: calls.append(1), wait_first=True, wait=pauses)
    loop.start()
    assert pauses.paused.wait(DEADLINE)
    assert calls == [] and pauses.asked == [0.2]  # paused before any call
    loop.stop()
    assert not loop.running
    assert calls == []  # stopped during the first wait: never ran


def test_without_wait_first_the_first_call_comes_before_any_pause():
    calls = []
    pauses = Pauses(block=True)
    loop = Periodic("early", 0.2, lambda: calls.append(len(pauses.asked)), wait=pauses)
    loop.start()
    assert pauses.paused.wait(DEADLINE)
    loop.stop()
    assert calls == [0]


def test_the_default_wait_is_the_stop_event():
    """Without ``wait=`` the pause is the stop event's own: stop ends a long pause at once."""
    called = threading.Event()
    loop = Periodic("default", 3600, called.set)
    loop.start()
    assert called.wait(DEADLINE)
    loop.stop(timeout=DEADLINE)
    assert not loop.running


def test_a_job_that_outlives_stop_is_never_doubled():
    release, running = threading.Event(), threading.Event()

    def slow():
        running.set()
        release.wait(DEADLINE)

    loop = Periodic("slow", 0.01, slow)
    loop.start()
    assert running.wait(DEADLINE)
    loop.stop(timeout=0.05)  # returns while the job is still inside slow()
    try:
        with pytest.raises(RuntimeError, match="has not stopped yet"):
            loop.start()
    finally:
        release.set()
    loop.stop()
    assert not loop.running
