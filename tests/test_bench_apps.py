"""The bench's yardsticks and instruments: the naive app and the floor answer, /proc is read right."""

import importlib
import os
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from bench import floor_app, procstat, targets


@pytest.fixture
def naive(tmp_path, monkeypatch):
    """The naive app loading one small classifier from a scratch artifact folder, as the bench lays it out."""
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    (tmp_path / "tiny" / "1").mkdir(parents=True)
    joblib.dump(model, tmp_path / "tiny" / "1" / "model.joblib")
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    import bench.naive_app

    module = importlib.reload(bench.naive_app)
    return module.application.test_client(), model, X


def test_the_naive_app_predicts_what_the_model_predicts(naive):
    client, model, X = naive
    response = client.post("/v1/models/tiny:predict", json={"instances": X.to_numpy().tolist()})
    assert response.status_code == 200
    assert response.get_json() == {"predictions": model.predict(X).tolist()}
    assert client.get("/readyz").get_json()["models"] == ["tiny"]


def test_the_naive_app_has_no_model_it_was_not_given(naive):
    client, _, _ = naive
    assert client.post("/v1/models/other:predict", json={"instances": [[1.0, 2.0]]}).status_code == 500


@pytest.fixture
def lean(naive, monkeypatch):
    """The lean app over the same scratch artifact folder as ``naive``."""
    import bench.lean_app

    module = importlib.reload(bench.lean_app)
    return module.application.test_client(), naive[1], naive[2]


def test_the_lean_app_predicts_what_the_model_predicts_from_a_plain_array(lean):
    client, model, X = lean
    response = client.post("/v1/models/tiny/versions/1:predict", json={"instances": X.to_numpy().tolist()})
    assert response.status_code == 200
    assert response.get_json() == {"predictions": model.predict(X).tolist()}
    assert client.get("/readyz").get_json()["models"] == ["tiny"]


def test_the_floor_answers_a_constant_whatever_it_is_sent():
    client = floor_app.application.test_client()
    for body, path in ((b'{"instances": [[1, 2]]}', "anything:predict"), (b"not even json", "m/versions/3:predict")):
        response = client.post(f"/v1/models/{path}", data=body, content_type="application/json")
        assert response.status_code == 200
        assert response.get_json() == {"predictions": [0]}
    assert client.get("/readyz").status_code == 200


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads Linux /proc")
def test_the_sampler_counts_a_busy_child_and_forgets_nothing_when_it_exits():
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"])
    try:
        with procstat.CpuSampler(parent.pid) as sampler:
            parent.wait(30)
    finally:
        parent.kill()
    assert sampler.pids_seen >= 2  # the parent and its child
    assert sampler.total() >= 0.2  # the child's 0.3 s of CPU, less at most one poll interval


def test_memory_of_this_process_is_read_from_smaps_rollup():
    mine = procstat.memory(os.getpid())
    if mine is None:
        pytest.skip("no /proc/<pid>/smaps_rollup here")
    assert 0 < mine.uss_mib <= mine.pss_mib <= mine.rss_mib


def test_the_extra_worker_share_is_private_memory_over_the_first_workers_pss():
    workers = [{"pss_mib": 100.0, "uss_mib": 40.0}, {"pss_mib": 90.0, "uss_mib": 20.0}, {"pss_mib": 90.0, "uss_mib": 30.0}]
    assert targets.extra_worker_share(workers) == pytest.approx(0.25)  # the first worker's own USS is not "extra"
    assert targets.extra_worker_share(workers[:1]) is None and targets.extra_worker_share([]) is None


def test_a_target_without_a_figure_is_not_measured_never_met():
    lines = targets.check({}, {"runs": {}, "connections": 8}, {}, {})
    assert lines and all(line["met"] is None for line in lines)
    record = {"rows": 1, "runs": {"server": {"requests_per_second": 300.0, "cpu_us_per_request": 1000.0, "p50_ms": 1.0,
                                             "p99_ms": 2.0},
                                  "naive": {"requests_per_second": 100.0, "cpu_us_per_request": 2500.0},
                                  "floor": {"requests_per_second": 900.0, "cpu_us_per_request": 400.0}}}
    ratios = targets.ratios(record)
    assert ratios["throughput_vs_naive"] == pytest.approx(3.0)
    assert ratios["cpu_vs_floor"] == pytest.approx(2.5)
    assert ratios["monitoring_throughput_cost"] is None
    assert np.isclose(ratios["p99_over_p50"], 2.0)


def test_the_naive_app_serves_a_version_named_in_the_path(naive, tmp_path):
    client, model, X = naive
    url = "/v1/models/tiny/versions/1:predict"
    assert client.post(url, json={"instances": X.to_numpy().tolist()}).get_json() == {"predictions": model.predict(X).tolist()}
    assert client.post("/v1/models/tiny/versions/2:predict", json={"instances": []}).status_code >= 400


def test_the_lean_targets_read_the_lean_apps_requests_per_second():
    def record(server_rps, lean_rps):
        runs = {"server": {"requests_per_second": server_rps}, "lean": {"requests_per_second": lean_rps}}
        record = {"rows": 1, "runs": runs}
        return record | {"ratios": targets.ratios(record)}

    records = {"breast-cancer/1": record(1300.0, 1000.0), "breast-cancer/100": record(900.0, 1000.0),
               "random-forest/1": record(4000.0, 1000.0)}
    lines = {line["target"]: line for line in targets.check(records, {"runs": {}, "connections": 8}, {}, {})}
    assert lines["1 row, LR: req/s >= 1.3x the lean naive app"]["met"] is True
    assert lines["100 rows, LR: req/s >= 1x the lean naive app"]["met"] is False
    assert lines["1 row, RF: req/s >= 5x the lean naive app"]["met"] is False
    assert lines["1 row, HGB: req/s >= 1.3x the lean naive app"]["met"] is None
