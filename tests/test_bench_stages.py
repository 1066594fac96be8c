"""bench.stages: py-spy's stacks go to the request stage on them, idle waits to none, shares to µs."""

from __future__ import annotations

import pytest

from bench import stages

VIEW = ("Thread._bootstrap (threading.py:1002);_WorkItem.run (concurrent/futures/thread.py:58);"
        "ThreadWorker.handle (gunicorn/workers/gthread.py:553);Flask.wsgi_app (flask/app.py:1511);"
        "wrapper (service/api/auth.py:55);predict (service/api/predict.py:20);answer (service/api/predict.py:40)")
RAW = "\n".join([
    VIEW + ";predict (service/serving/inference.py:130);_validate (service/serving/inference.py:300);"
           "validate_rows (service/serving/validation.py:70) 30",
    VIEW + ";predict (service/serving/inference.py:135);_run (service/serving/inference.py:320);"
           "LoadedModel.predict (service/serving/runtime.py:130) 50",
    VIEW + " 10",
    "ThreadWorker.run (gunicorn/workers/gthread.py:425);EpollSelector.select (selectors.py:468) 500",
    "Thread._bootstrap (threading.py:1002);Recorder._run (service/monitoring/recorder.py:123);"
    "Observer.write_batch (service/monitoring/observe.py:204) 10",
    "Thread._bootstrap (threading.py:1002);Recorder._run (service/monitoring/recorder.py:119) 400",
])


def test_each_sample_goes_to_the_innermost_request_stage_and_waits_to_none():
    counts = stages.tally(RAW)
    assert counts == {"validation": 30, "predict (backend)": 50, "view and error hooks (rest)": 10,
                      "recorder writer thread (after the answer)": 10}


def test_shares_of_the_samples_become_microseconds_per_request():
    figures = stages.breakdown(stages.tally(RAW), 1000.0)
    assert figures["predict (backend)"] == pytest.approx(500.0)
    assert figures["validation"] == pytest.approx(300.0)
    assert sum(figures.values()) == pytest.approx(1000.0)
    assert set(figures) == {stage for stage, _ in stages.STAGES}
