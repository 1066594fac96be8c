"""Metrics: names, label bounds, the Flask hooks, multiprocess files, and the shipped rules and dashboard."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.api import metrics as metrics_api
from service.monitoring import metric_families, metrics, multiproc

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
METRIC_RE = re.compile(r"\bsklearn_server_[a-z0-9_]+")

MANIFEST = {
    "model_file": "model.joblib",
    "files": {"model.joblib": {"sha256": "ab" * 32, "size": 10}},
    "libraries": {"scikit-learn": "1.9.1", "python": "3.11.7"},
    "input": {"features": [{"name": "age"}, {"name": "bmi"}]},
}


def promtool() -> str:
    """Return promtool's path, failing (never skipping) with the fix when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run the project's setup (Debian package `prometheus`: "
                    "apt-get install -y prometheus)")
    return path


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> metrics.Metrics:
    """A private, single-process set of metrics behind the module functions."""
    assert metrics.multiprocess_dir() is None, "unit tests run single-process"
    instance = metrics.Metrics(CollectorRegistry())
    monkeypatch.setattr(metrics, "_current", instance)
    return instance


def scrape(instance: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text into {(sample name, sorted labels): value}, refusing duplicates."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(generate_latest(instance.registry).decode()):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def defined_names() -> set[str]:
    """Every sample name the module can expose (counters with _total, histograms with their parts)."""
    names = set()
    for family in metrics.Metrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def exercise(m: metrics.Metrics) -> None:
    """Touch every family once with valid values."""
    m.observe_model_loaded("diabetes", 1, MANIFEST)
    m.observe_model_loaded("diabetes", 2, MANIFEST)
    m.observe_load_failure("diabetes", 3)
    m.observe_request("/v1/models/<model_name:name>:predict", "POST", 200, 0.0)
    m.http_in_progress.inc()
    m.observe_prediction("diabetes", 2, "ok", rows=5, seconds=0.01)
    m.observe_prediction("diabetes", None, "invalid")
    m.observe_validation_failure("diabetes", "validation_failed")
    m.observe_fallback("diabetes", 2, 1, "timeout")
    m.set_gauge("drift_score", 0.3, model="diabetes", version=2, feature="bmi", statistic="psi")
    m.set_gauge("data_quality_ratio", 0.01, model="diabetes", version=2, feature="age", check="missing")
    m.set_gauge("live_metric", 0.9, model="diabetes", version=2, metric="r2")
    m.set_gauge("bias_gap", 0.05, model="diabetes", version=2, feature="age", metric="demographic_parity_difference")
    m.set_gauge("window_predictions", 500, model="diabetes", version=2)
    m.set_gauge("alert_state", 3, model="diabetes", version=2, rule="data_drift")


# -- names --------------------------------------------------------------------------------------


def test_names_follow_prometheus_conventions(fresh):
    exercise(fresh)
    families = list(text_string_to_metric_families(generate_latest(fresh.registry).decode()))
    assert families
    for family in families:
        assert family.name.startswith(metrics.PREFIX), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_rows")), family.name
        if family.type == "gauge" and "sha256" in [label for s in family.samples for label in s.labels]:
            assert family.name.endswith("_info")
    assert {"sklearn_server_http_requests_total", "sklearn_server_http_request_duration_seconds_bucket",
            "sklearn_server_http_requests_in_progress", "sklearn_server_prediction_requests_total",
            "sklearn_server_predictions_total", "sklearn_server_prediction_batch_rows_bucket",
            "sklearn_server_validation_failures_total", "sklearn_server_model_info",
            "sklearn_server_model_load_failures_total", "sklearn_server_fallbacks_total",
            "sklearn_server_drift_score", "sklearn_server_alert_state"} <= defined_names()


def test_latency_buckets_include_the_objective():
    assert metrics.LATENCY_OBJECTIVE_SECONDS in metrics.LATENCY_BUCKETS


def test_promtool_finds_nothing_to_complain_about(fresh):
    exercise(fresh)
    done = subprocess.run([promtool(), "check", "metrics"], input=generate_latest(fresh.registry),
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done


def test_values_and_labels(fresh):
    exercise(fresh)
    s = scrape(fresh)
    assert value(s, "sklearn_server_model_info", model="diabetes", version="2", sha256="ab" * 32,
                 sklearn_version="1.9.1") == 1
    assert value(s, "sklearn_server_prediction_requests_total", model="diabetes", version="2", outcome="ok") == 1
    assert value(s, "sklearn_server_prediction_requests_total", model="diabetes", version="", outcome="invalid") == 1
    assert value(s, "sklearn_server_predictions_total", model="diabetes", version="2") == 5
    assert value(s, "sklearn_server_prediction_batch_rows_sum", model="diabetes") == 5
    assert value(s, "sklearn_server_validation_failures_total", model="diabetes", code="validation_failed") == 1
    assert value(s, "sklearn_server_fallbacks_total", model="diabetes", from_version="2", to_version="1",
                 reason="timeout") == 1
    assert value(s, "sklearn_server_model_load_failures_total", model="diabetes", version="3") == 1
    assert value(s, "sklearn_server_alert_state", model="diabetes", version="2", rule="data_drift") == 3
    fresh.observe_model_removed("diabetes", 1)
    assert value(scrape(fresh), "sklearn_server_model_info", model="diabetes", version="1", sha256="ab" * 32,
                 sklearn_version="1.9.1") == 0


# -- label bounds ---------------------------------------------------------------------------------


def test_unknown_model_or_version_creates_no_series(fresh):
    metrics.observe_model_loaded("diabetes", 1, MANIFEST)
    metrics.observe_prediction("no-such-model", None, "invalid")
    metrics.observe_prediction("no-such-model", 1, "ok", rows=3, seconds=0.1)
    metrics.observe_prediction("diabetes", 99, "ok", rows=3, seconds=0.1)
    metrics.observe_validation_failure("no-such-model", "validation_failed")
    metrics.observe_fallback("no-such-model", 2, 1)
    metrics.observe_fallback("diabetes", 99, 1)
    metrics.set_gauge("drift_score", 1.0, model="no-such-model", version=1, feature="bmi", statistic="psi")
    metrics.set_gauge("drift_score", 1.0, model="diabetes", version=99, feature="bmi", statistic="psi")
    text = generate_latest(fresh.registry).decode()
    assert "no-such-model" not in text
    assert 'version="99"' not in text


def test_labels_outside_their_bounds_are_dropped_without_raising(fresh):
    metrics.observe_model_loaded("diabetes", 1, MANIFEST)
    metrics.set_gauge("drift_score", 1.0, model="diabetes", version=1, feature="not-a-feature", statistic="psi")
    metrics.set_gauge("drift_score", 1.0, model="diabetes", version=1, feature="bmi", statistic="bad value!")
    metrics.set_gauge("drift_score", 1.0, model="diabetes", version=1)  # labels missing
    metrics.set_gauge("no_such_gauge", 1.0, model="diabetes")
    metrics.observe_prediction("diabetes", 1, "weird-outcome")
    metrics.observe_validation_failure("diabetes", "x" * 500)
    for i in range(metrics.MAX_VALUES_PER_LABEL + 20):
        metrics.set_gauge("alert_state", 0, model="diabetes", version=1, rule=f"rule_{i}")
    s = scrape(fresh)
    names = {name for name, _ in s}
    assert "sklearn_server_prediction_requests_total" not in names
    assert "sklearn_server_validation_failures_total" not in names
    assert not any(name == "sklearn_server_drift_score" for name, _ in s)
    rules = [labels for name, labels in s if name == "sklearn_server_alert_state"]
    assert len(rules) == metrics.MAX_VALUES_PER_LABEL
    metrics.set_gauge("drift_score", 0.2, model="diabetes", version=1, feature=metrics.PREDICTION_FEATURE,
                      statistic="psi")
    assert value(scrape(fresh), "sklearn_server_drift_score", model="diabetes", version="1",
                 feature=metrics.PREDICTION_FEATURE, statistic="psi") == pytest.approx(0.2)


def test_observations_never_raise(monkeypatch):
    def broken() -> metrics.Metrics:
        raise RuntimeError("no metrics today")

    monkeypatch.setattr(metrics, "current", broken)
    metrics.observe_prediction("diabetes", 1, "ok", rows=1, seconds=0.1)
    metrics.observe_validation_failure("diabetes", "validation_failed")
    metrics.observe_model_loaded("diabetes", 1, {})
    metrics.observe_model_removed("diabetes", 1)
    metrics.observe_load_failure("diabetes", 1)
    metrics.observe_fallback("diabetes", 2, 1)
    metrics.set_gauge("live_metric", 1.0, model="diabetes", version=1, metric="r2")
    app = Flask(__name__)
    metrics_api.init_app(app)
    app.add_url_rule("/ok", "ok", lambda: "fine")
    assert app.test_client().get("/ok").status_code == 200


def test_outcome_for_status():
    assert [metrics.outcome_for(s) for s in (200, 404, 422, 500, 503)] == ["ok", "invalid", "invalid", "error", "error"]


# -- the Flask hooks --------------------------------------------------------------------------------


def test_route_label_is_the_url_rule_never_the_path(fresh):
    app = Flask(__name__)
    metrics_api.init_app(app)
    app.add_url_rule("/items/<int:item>", "item", lambda item: {"item": item})

    @app.post("/boom")
    def boom():
        raise RuntimeError("boom")

    client = app.test_client()
    for item in (1, 2, 3):
        assert client.get(f"/items/{item}").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert client.post("/items/1").status_code == 405
    assert client.post("/boom").status_code == 500
    s = scrape(fresh)
    assert value(s, "sklearn_server_http_requests_total", route="/items/<int:item>", method="GET", status="200") == 3
    assert value(s, "sklearn_server_http_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert value(s, "sklearn_server_http_requests_total", route="<unmatched>", method="POST", status="405") == 1
    assert value(s, "sklearn_server_http_requests_total", route="/boom", method="POST", status="500") == 1
    assert value(s, "sklearn_server_http_request_duration_seconds_count", route="/items/<int:item>", method="GET") == 3
    assert value(s, "sklearn_server_http_requests_in_progress") == 0
    assert not any("/items/1" in str(labels) or "/no/such" in str(labels) for _, labels in s)


def test_metrics_endpoint_serves_the_text_format(fresh):
    app = Flask(__name__)
    metrics_api.init_app(app)
    app.register_blueprint(metrics_api.bp)
    client = app.test_client()
    client.get("/metrics")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    requests = families["sklearn_server_http_requests"].samples
    assert [(s.labels["route"], s.value) for s in requests if s.name.endswith("_total")] == [("/metrics", 1.0)]
    # the scrape being answered is in progress while the text is rendered
    assert families["sklearn_server_http_requests_in_progress"].samples[0].value == 1


# -- multiprocess mode (in subprocesses: it changes prometheus-client for the whole process) ----------


def run_python(code: str, multiproc_dir: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    env["PYTHONPATH"] = str(REPO)
    if multiproc_dir is not None:
        env[metrics.MULTIPROC_ENV] = str(multiproc_dir)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_prepare_empties_only_prometheus_files_and_exports_the_directory(tmp_path):
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_999.db").write_bytes(b"stale")
    (folder / "gauge_livesum_999.db").write_bytes(b"stale")
    (folder / "notes.txt").write_text("not ours")
    out = run_python(f"""
        import os
        import prometheus_client  # imported before the variable exists, as a careless import would
        from prometheus_client import values
        from service.monitoring import metrics
        folder = metrics.prepare_multiprocess_dir({str(folder)!r})
        print(os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder), values.ValueClass._multiprocess)
        metrics.observe_model_loaded("diabetes", 1, {{}})
        print(sorted(os.listdir(folder)))
    """)
    flags, files = out.splitlines()
    assert flags == "True True"
    assert "notes.txt" in files and "counter_999.db" not in files and "gauge_livesum_999.db" not in files
    assert re.search(r"gauge_livemax_\d+\.db", files)


def test_default_folder_is_in_memory_per_user_and_port(tmp_path, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(multiproc, "SHM", shm)
    assert multiproc.default_dir(8123) == shm / f"sklearn-server-{os.getuid()}-metrics-8123"
    assert multiproc.default_dir(8124) != multiproc.default_dir(8123)


def test_default_folder_never_follows_a_link_in_shared_memory(tmp_path, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(multiproc, "SHM", shm)
    monkeypatch.chdir(tmp_path)
    (shm / f"sklearn-server-{os.getuid()}-metrics-8123").symlink_to(tmp_path)
    assert multiproc.default_dir(8123) == tmp_path / "var" / "prometheus" / "8123"
    monkeypatch.setattr(multiproc, "SHM", tmp_path / "missing")
    assert multiproc.default_dir(9000) == tmp_path / "var" / "prometheus" / "9000"


def test_new_files_are_fully_allocated_before_they_are_mapped(tmp_path):
    path = tmp_path / "counter_1.db"
    mapped = multiproc.AllocatedMmapedDict(str(path))
    try:
        for i in range(3000):  # enough keys to grow the file past its first 64 KiB
            mapped.write_value(f'["m", "m_total", {{"i": "{i}"}}, "help"]', float(i), 0.0)
        st = path.stat()
        assert st.st_size > 64 * 1024
        assert st.st_blocks * 512 >= st.st_size  # no holes: a later write cannot find a full disk
    finally:
        mapped.close()
    assert {k: v for k, v, _ in multiproc.read_values(path)}['["m", "m_total", {"i": "7"}, "help"]'] == 7


def test_no_room_is_an_error_at_creation_and_leaves_no_empty_file(tmp_path, monkeypatch):
    def full(fd: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(multiproc, "allocate", full)
    path = tmp_path / "counter_1.db"
    with pytest.raises(OSError):
        multiproc.AllocatedMmapedDict(str(path))
    assert not path.exists()  # an empty file would break every scrape


def test_no_room_to_grow_is_an_error_and_the_file_stays_readable(tmp_path, monkeypatch):
    path = tmp_path / "counter_1.db"
    mapped = multiproc.AllocatedMmapedDict(str(path))
    mapped.write_value("first", 1.0, 0.0)
    monkeypatch.setattr(multiproc, "allocate", lambda fd, size: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        for i in range(3000):
            mapped.write_value(f"key-{i:05d}-" + "x" * 40, 1.0, 0.0)
    mapped.write_value("first", 2.0, 0.0)  # existing series keep counting
    mapped.close()
    assert {k: v for k, v, _ in multiproc.read_values(path)}["first"] == 2.0


def test_a_worker_whose_files_cannot_be_made_counts_in_memory(tmp_path):
    out = run_python("""
        import errno
        from service.monitoring import metrics, multiproc
        def full(fd, size):
            raise OSError(errno.ENOSPC, "No space left on device")
        multiproc.allocate = full
        m = metrics.current()
        metrics.observe_model_loaded("diabetes", 1, {})
        metrics.observe_prediction("diabetes", 1, "ok", rows=2, seconds=0.01)
        print(m.registry is not None, m.predictions.labels("diabetes", "1")._value.get())
    """, tmp_path)
    assert out.split() == ["True", "2.0"]
    assert not list(tmp_path.iterdir())


def test_a_failed_observation_is_counted(fresh):
    metrics.observe_validation_failure("diabetes", "fine")  # unknown model: nothing to count, no failure
    fresh.observe_model_loaded("diabetes", 1, MANIFEST)
    metrics.observe_validation_failure("diabetes", "not a token!")
    assert value(scrape(fresh), "sklearn_server_metric_write_failures_total") == 1


def test_dead_workers_files_are_merged_newest_gauge_wins(tmp_path):
    for pid, (count, gauge, ts) in {11: (2.0, 5.0, 100.0), 12: (3.0, 7.0, 50.0)}.items():
        for kind, val, stamp in (("counter", count, 0.0), ("gauge_mostrecent", gauge, ts)):
            mapped = multiproc.AllocatedMmapedDict(str(tmp_path / f"{kind}_{pid}.db"))
            mapped.write_value("k", val, stamp)
            mapped.close()
        multiproc.merge_into_archive(tmp_path / f"counter_{pid}.db", tmp_path / "counter_archive.db")
        multiproc.merge_into_archive(tmp_path / f"gauge_mostrecent_{pid}.db", tmp_path / "gauge_mostrecent_archive.db",
                                     newest=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_archive.db", "gauge_mostrecent_archive.db"]
    read = {name: list(multiproc.read_values(tmp_path / name))
            for name in ("counter_archive.db", "gauge_mostrecent_archive.db")}
    assert read == {"counter_archive.db": [("k", 5.0, 0.0)], "gauge_mostrecent_archive.db": [("k", 5.0, 100.0)]}


WORKER = """
    import os, sys
    from service.monitoring import metrics
    m = metrics.current()
    metrics.observe_model_loaded("diabetes", 1, {"model_file": "m", "files": {"m": {"sha256": "ab"}},
                                                 "libraries": {"scikit-learn": "1.9.1"}})
    for _ in range(int(sys.argv[1] if len(sys.argv) > 1 else 3)):
        m.observe_request("/v1/models/<model_name:name>:predict", "POST", 200, None)
        metrics.observe_prediction("diabetes", 1, "ok", rows=2, seconds=0.01)
    m.http_in_progress.inc()  # dies "mid-request": only mark_worker_dead can take this back
    print(os.getpid())
"""


def test_two_processes_add_up_and_a_dead_one_leaves_no_live_gauge(tmp_path):
    folder = tmp_path / "prom"
    run_python("""
        import os
        from service.monitoring import metrics
        metrics.prepare_multiprocess_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    """, folder)
    pids = [int(run_python(WORKER, folder)) for _ in range(2)]
    assert len(set(pids)) == 2

    def scraped() -> dict:
        out = run_python("""
            from service.monitoring import metrics
            body, content_type = metrics.render()
            print(body.decode())
        """, folder)
        samples: dict = {}
        for family in text_string_to_metric_families(out):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in samples, f"duplicate series {key}"
                samples[key] = sample.value
        return samples

    s = scraped()
    assert value(s, "sklearn_server_http_requests_total", route="/v1/models/<model_name:name>:predict",
                 method="POST", status="200") == 6
    assert value(s, "sklearn_server_predictions_total", model="diabetes", version="1") == 12
    assert value(s, "sklearn_server_prediction_batch_rows_count", model="diabetes") == 6
    assert value(s, "sklearn_server_http_requests_in_progress") == 2
    assert value(s, "sklearn_server_model_info", model="diabetes", version="1", sha256="ab", sklearn_version="1.9.1") == 1
    assert not any("pid" in dict(labels) for name, labels in s if not name.startswith("sklearn_server_worker_"))
    for name in ("sklearn_server_worker_cpu_seconds", "sklearn_server_worker_resident_memory_bytes",
                 "sklearn_server_worker_open_fds"):
        # every worker, and the process answering the scrape, each with its pid
        assert set(pids) < {int(dict(labels)["pid"]) for n, labels in s if n == name}, name
    assert value(s, "sklearn_server_worker_resident_memory_bytes", pid=str(pids[0])) > 1e6

    run_python(f"""
        from service.monitoring import metrics
        for pid in {pids!r}:
            metrics.mark_worker_dead(pid)
    """, folder)
    s = scraped()
    assert value(s, "sklearn_server_http_requests_in_progress") in (None, 0)
    assert value(s, "sklearn_server_predictions_total", model="diabetes", version="1") == 12  # counters survive
    assert not any(name == "sklearn_server_model_info" for name, _ in s)  # no live worker has it loaded
    assert not any(dict(labels).get("pid") in map(str, pids) for _, labels in s)
    # a dead worker's counts live on in one archive per kind; its own files are gone
    assert not [p.name for p in folder.iterdir() if any(p.name.endswith(f"_{pid}.db") for pid in pids)]
    assert {"counter_archive.db", "histogram_archive.db"} <= {p.name for p in folder.iterdir()}


def test_single_process_without_the_variable(fresh):
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "sklearn_server_http_requests_in_progress" in body.decode()
    assert value(scrape(fresh), "sklearn_server_worker_open_fds") > 0
    metrics.mark_worker_dead(12345)  # a no-op, not an error


# -- shipped Prometheus rules and Grafana dashboard ---------------------------------------------------


def test_alert_rules_pass_promtool():
    done = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_example_prometheus_config_passes_promtool_and_scrapes_with_a_key(tmp_path):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (scrape,) = config["scrape_configs"]
    assert scrape["authorization"] == {"type": "Bearer", "credentials_file": "metrics.key"}
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(PROMETHEUS_CONFIG.parent / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "metrics.key").write_text("sk_" + "x" * 43 + "\n")  # promtool checks the file is there
    done = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_fire_on_the_figures_they_watch(tmp_path):
    """Feed series to promtool's rule tester: the drift and 5xx alerts fire, nothing else."""
    assert_rule_tests_pass(tmp_path, """
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'up{job="sklearn-server", instance="a"}'
                values: '1x60'
              - series: 'sklearn_server_model_info{job="j", model="m", version="1", sha256="x", sklearn_version="1"}'
                values: '1x60'
              - series: 'sklearn_server_http_requests_total{job="j", instance="a", route="/r", method="POST", status="200"}'
                values: '0+60x60'
              - series: 'sklearn_server_http_requests_total{job="j", instance="a", route="/r", method="POST", status="500"}'
                values: '0+30x60'
              - series: 'sklearn_server_drift_score{job="j", model="m", version="1", feature="bmi", statistic="psi"}'
                values: '0.4x60'
            alert_rule_test:
              - eval_time: 40m
                alertname: SklearnServerHighErrorRatio
                exp_alerts:
                  - exp_labels: {severity: critical, job: j, instance: a}
              - eval_time: 40m
                alertname: SklearnServerFeatureDrift
                exp_alerts:
                  - exp_labels: {severity: warning, job: j, model: m, version: "1", feature: bmi}
              - eval_time: 40m
                alertname: SklearnServerNoModelLoaded
                exp_alerts: []
              - eval_time: 40m
                alertname: SklearnServerModelLoadFailure
                exp_alerts: []
              - eval_time: 40m
                alertname: SklearnServerRecordsDropped
                exp_alerts: []
              - eval_time: 40m
                alertname: SklearnServerStoreWriteFailures
                exp_alerts: []
    """)


def test_recording_alerts_fire_when_records_are_dropped_or_writes_fail(tmp_path):
    """A dropped record alerts at once (by reason); failing writes alert after two minutes; a spool
    backlog of ten minutes warns; none of them fires while the counters stand still."""
    assert_rule_tests_pass(tmp_path, """
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'sklearn_server_records_dropped_total{job="j", instance="a", reason="spool_full"}'
                values: '0x10 0 5 5 5'
              - series: 'sklearn_server_store_write_failures_total{job="j", instance="a", table="records", reason="locked"}'
                values: '0x10 0+3x10'
              - series: 'sklearn_server_spool_oldest_seconds{job="j", instance="a"}'
                values: '0x10 0+60x30'
            alert_rule_test:
              - eval_time: 9m
                alertname: SklearnServerRecordsDropped
                exp_alerts: []
              - eval_time: 12m
                alertname: SklearnServerRecordsDropped
                exp_alerts:
                  - exp_labels: {severity: critical, job: j, instance: a, reason: spool_full}
              - eval_time: 9m
                alertname: SklearnServerStoreWriteFailures
                exp_alerts: []
              - eval_time: 15m
                alertname: SklearnServerStoreWriteFailures
                exp_alerts:
                  - exp_labels: {severity: warning, job: j, instance: a, reason: locked}
              - eval_time: 20m
                alertname: SklearnServerSpoolBacklog
                exp_alerts: []
              - eval_time: 30m
                alertname: SklearnServerSpoolBacklog
                exp_alerts:
                  - exp_labels: {severity: warning, job: j, instance: a}
    """)


def assert_rule_tests_pass(tmp_path, tests_yaml: str) -> None:
    """Run promtool's rule tester on the shipped rules (without their prose) with ``tests_yaml``."""
    (tmp_path / "alerts.yml").write_text(without_annotations(ALERTS.read_text()))
    (tmp_path / "test.yml").write_text(textwrap.dedent(tests_yaml))
    done = subprocess.run([promtool(), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def without_annotations(rules: str) -> str:
    """Drop each rule's annotations, so the rule tests check when alerts fire, not their prose."""
    kept, depth = [], None
    for line in rules.splitlines():
        indent = len(line) - len(line.lstrip())
        if depth is not None and (indent > depth or not line.strip()):
            continue
        depth = indent if line.strip() == "annotations:" else None
        if depth is None:
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_alert_rules_only_use_metrics_the_server_defines():
    exprs = re.findall(r"expr: (.*?)\n +for:", ALERTS.read_text(), flags=re.S)
    assert len(exprs) == ALERTS.read_text().count("- alert:")
    used = set(METRIC_RE.findall(" ".join(exprs)))
    assert used and used <= defined_names(), used - defined_names()


def test_dashboard_is_importable_and_queries_defined_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    names = defined_names()
    queried = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(METRIC_RE.findall(target["expr"]))
            assert used and used <= names, (panel["title"], used - names)
            queried |= used
    for variable in dashboard["templating"]["list"]:
        assert set(METRIC_RE.findall(variable["query"]["query"])) <= names
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("requests per second", "error", "latency", "version", "batch", "validation", "fallback", "drift",
                  "alert"):
        assert topic in titles, topic
    assert {"sklearn_server_fallbacks_total", "sklearn_server_drift_score", "sklearn_server_alert_state",
            "sklearn_server_prediction_batch_rows_bucket", "sklearn_server_validation_failures_total"} <= queried


def test_requests_are_counted_by_rule_method_and_status_each_time(fresh):
    rule = "/v1/models/<model_name:name>:predict"
    for _ in range(3):
        fresh.observe_request(rule, "POST", 200, 0.0)
    fresh.observe_request(rule, "POST", 422, None)
    fresh.observe_request(rule, "BREW", 405, None)
    fresh.observe_request(rule, "TEA", 405, None)
    value = fresh.registry.get_sample_value
    total = metrics.PREFIX + "http_requests_total"
    assert value(total, {"route": rule, "method": "POST", "status": "200"}) == 3
    assert value(total, {"route": rule, "method": "POST", "status": "422"}) == 1
    assert value(total, {"route": rule, "method": "other", "status": "405"}) == 2
    assert value(metrics.PREFIX + "http_request_duration_seconds_count", {"route": rule, "method": "POST"}) == 3


def test_the_request_children_kept_at_hand_are_bounded(fresh, monkeypatch):
    monkeypatch.setattr(metric_families, "MAX_HTTP_CHILDREN", 2)
    for method in ("A", "B", "C", "D"):
        fresh.observe_request("/x", method, 200, None)
    assert len(fresh._http_children) == 2
    assert fresh.registry.get_sample_value(metrics.PREFIX + "http_requests_total",
                                           {"route": "/x", "method": "other", "status": "200"}) == 4


def test_answers_are_counted_each_time_through_the_children_kept_at_hand(fresh):
    fresh.observe_model_loaded("diabetes", 2, MANIFEST)
    for _ in range(3):
        fresh.observe_prediction("diabetes", 2, "ok", rows=5, seconds=0.01)
        fresh.observe_protocol("diabetes", "v1", "ok")
    fresh.observe_prediction("diabetes", 2, "invalid")
    value = fresh.registry.get_sample_value
    assert value(metrics.PREFIX + "prediction_requests_total", {"model": "diabetes", "version": "2", "outcome": "ok"}) == 3
    assert value(metrics.PREFIX + "prediction_requests_total",
                 {"model": "diabetes", "version": "2", "outcome": "invalid"}) == 1
    assert value(metrics.PREFIX + "predictions_total", {"model": "diabetes", "version": "2"}) == 15
    assert value(metrics.PREFIX + "protocol_requests_total", {"model": "diabetes", "protocol": "v1", "outcome": "ok"}) == 3
