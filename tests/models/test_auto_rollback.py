import contextlib
import logging
import os
import shutil
import time
import types
from datetime import datetime

import pytest

from service.models import artifacts, registry, registry_anchor
from service.models import auto_rollback as guard
from service.security import audit
from service.store import RequestRecord, Store
from tests.builders import wait_until

MODEL = "breast-cancer"
RATE_SENTENCE = "error rate 0.12 > 0.05 over 80 requests"


@pytest.fixture
def root(artifact_root):
    """The demo models plus a version 2 of breast-cancer (a copy of version 1)."""
    source, target = artifacts.version_dir(artifact_root, MODEL, 1), artifacts.version_dir(artifact_root, MODEL, 2)
    shutil.copytree(source, target)
    manifest_path = target / artifacts.MANIFEST
    os.chmod(manifest_path, 0o644)
    manifest = artifacts.read_manifest(target)
    artifacts.write_json_atomic(manifest_path, {**manifest, "version": 2}, mode=0o444)
    return artifact_root


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "db.sqlite")


def set_canary(root, weight=10.0, version=2, store=None, **rules):
    """Start a canary; with ``store``, as the tools do (audited), so a guard that checks the file accepts it."""

    def change(state):
        state["rollout"] = {"canary": {"version": version, "weight": weight}, "shadow": [], "fallback": None,
                            "budget_ms": None, "rules": {"window_seconds": 300, "min_requests": 50,
                                                         "max_error_rate": 0.05, "max_p99_ms": None, **rules}}
        return {"action": "test"}

    with registry_anchor.registry_changes(store) if store is not None else contextlib.nullcontext():
        registry.update(root, MODEL, change, actor="test")


def traffic(store, *, version=2, ok=0, failed=0, fallbacks=0, latency=10.0, ts=None):
    ts = time.time() - 5 if ts is None else ts
    records = [RequestRecord(f"ok{i}", ts, MODEL, version, "canary", 200, latency, 1) for i in range(ok)]
    records += [RequestRecord(f"err{i}", ts, MODEL, version, "canary", 500, latency, 1, error="internal")
                for i in range(failed)]
    records += [RequestRecord(f"fb{i}", ts, MODEL, 1, "fallback", 200, latency, 1, fallback_from=version)
                for i in range(fallbacks)]
    records += [RequestRecord(f"bad{i}", ts, MODEL, version, "canary", 422, 1.0, 1, error="invalid") for i in range(40)]
    assert store.record_requests(records)


def canary(root):
    return registry.read_state(root, MODEL)["rollout"]["canary"]


def history(root):
    return registry.read_state(root, MODEL)["history"]


# -- evaluate ---------------------------------------------------------------------------------


RULES = {"min_requests": 50, "max_error_rate": 0.05, "max_p99_ms": 250.0}


def test_evaluate_reports_each_broken_rule_as_a_sentence():
    figures = {"requests": 80, "error_rate": 0.12, "p99_ms": 300.0}
    assert guard.evaluate(RULES, figures) == [RATE_SENTENCE, "p99 latency 300.0 ms > 250 ms over 80 requests"]
    assert guard.evaluate(RULES, {**figures, "p99_ms": 250.0}) == [RATE_SENTENCE]
    assert guard.evaluate(RULES, {**figures, "error_rate": 0.05, "p99_ms": 12.0}) == []


def test_evaluate_never_acts_on_a_handful_of_requests():
    figures = {"requests": 49, "error_rate": 1.0, "p99_ms": 9000.0}
    assert guard.evaluate(RULES, figures) == []
    assert guard.evaluate(RULES, {**figures, "requests": 50}) != []
    assert guard.evaluate({**RULES, "min_requests": 10}, {**figures, "requests": 10}) != []
    assert guard.evaluate(RULES, None) == []
    assert guard.evaluate({**RULES, "min_requests": 0}, {"requests": 0, "error_rate": None, "p99_ms": None}) == []


def test_evaluate_skips_null_rules_and_undefined_figures():
    figures = {"requests": 80, "error_rate": 0.5, "p99_ms": 900.0}
    assert guard.evaluate({"min_requests": 50, "max_error_rate": None, "max_p99_ms": None}, figures) == []
    assert guard.evaluate({"min_requests": 50}, figures) == []
    assert guard.evaluate(RULES, {"requests": 80, "error_rate": None, "p99_ms": None}) == []


def test_a_rule_is_one_entry_in_the_rules_table(monkeypatch):
    monkeypatch.setitem(guard.RULES, "max_mean_ms", lambda limit, f: f"mean {f['mean_ms']} > {limit}"
                        if f["mean_ms"] > limit else None)
    figures = {"requests": 80, "error_rate": 0.0, "p99_ms": 1.0, "mean_ms": 30.0}
    assert guard.evaluate({**RULES, "max_mean_ms": 20}, figures) == ["mean 30.0 > 20.0"]


# -- enforce ----------------------------------------------------------------------------------


def test_enforce_rolls_a_bad_canary_back_once(root, store, caplog):
    set_canary(root)
    traffic(store, ok=88, failed=8, fallbacks=4)  # 12 errors over 100 requests; the 40 client errors do not count
    before = len(history(root))
    sentence = "error rate 0.12 > 0.05 over 100 requests"

    with caplog.at_level(logging.ERROR, logger="service.models.auto_rollback"):
        entry = guard.enforce(store, root, MODEL)

    assert {k: entry[k] for k in ("action", "version", "previous_weight", "broken", "actor", "reason")} == {
        "action": "rollout.auto_rollback", "version": 2, "previous_weight": 10.0, "broken": [sentence],
        "actor": "guard", "reason": sentence}
    assert canary(root) == {"version": 2, "weight": 0.0}
    assert history(root)[-1] == entry and len(history(root)) == before + 1
    [record] = [r for r in caplog.records if r.message == "canary rolled back automatically"]
    assert (record.levelno, record.model, record.version, record.broken) == (logging.ERROR, MODEL, 2, [sentence])

    assert guard.enforce(store, root, MODEL) is None
    assert len(history(root)) == before + 1


def test_only_the_first_of_several_guards_acts(root, store, monkeypatch, caplog):
    set_canary(root)
    traffic(store, ok=70, failed=10)
    stale = registry.read_state(root, MODEL)  # what a second worker read before the first one wrote
    assert guard.enforce(store, root, MODEL, actor="worker-1") is not None
    count = len(history(root))

    monkeypatch.setattr(guard, "registry", types.SimpleNamespace(read_state=lambda r, n: stale, update=registry.update))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="service.models.auto_rollback"):
        assert guard.enforce(store, root, MODEL, actor="worker-2") is None
    assert len(history(root)) == count
    assert not caplog.records


def test_a_healthy_canary_is_left_alone(root, store):
    set_canary(root)
    traffic(store, ok=200, failed=2)
    before = history(root)
    assert guard.enforce(store, root, MODEL) is None
    assert canary(root) == {"version": 2, "weight": 10.0} and history(root) == before


def test_a_handful_of_failures_does_not_roll_back(root, store):
    set_canary(root)
    traffic(store, failed=10)
    assert guard.enforce(store, root, MODEL) is None
    assert canary(root)["weight"] == 10.0


def test_failures_outside_the_window_do_not_count(root, store):
    now = time.time()
    set_canary(root, window_seconds=60)
    traffic(store, failed=100, ts=now - 61)
    assert guard.enforce(store, root, MODEL, now=now) is None
    traffic(store, failed=100, ts=now - 59)
    assert guard.enforce(store, root, MODEL, now=now)["version"] == 2


def test_the_latency_rule_from_the_registry_is_enforced(root, store):
    set_canary(root, max_error_rate=None, max_p99_ms=100.0)
    traffic(store, ok=60, failed=60, latency=20.0)  # every request failed, but that rule is off
    assert guard.enforce(store, root, MODEL) is None
    traffic(store, ok=10, latency=500.0)
    assert guard.enforce(store, root, MODEL)["broken"] == ["p99 latency 500.0 ms > 100 ms over 130 requests"]


def test_a_reenabled_canary_is_judged_on_new_traffic_only(root, store):
    set_canary(root)
    traffic(store, failed=80)
    assert guard.enforce(store, root, MODEL) is not None
    rolled_back_at = datetime.fromisoformat(history(root)[-1]["at"]).timestamp()
    set_canary(root, store=store)  # the operator fixed something and tries again
    assert guard.enforce(store, root, MODEL, now=rolled_back_at + 2) is None
    traffic(store, failed=80, ts=rolled_back_at + 1)
    assert guard.enforce(store, root, MODEL, now=rolled_back_at + 2) is not None


def test_no_canary_no_action(root, store):
    traffic(store, failed=100)
    assert guard.enforce(store, root, MODEL) is None  # today's registry file: no rollout at all
    assert guard.enforce(store, root, "diabetes") is None
    set_canary(root, weight=0.0)
    assert guard.enforce(store, root, MODEL) is None
    assert history(root)[-1]["action"] == "test"


# -- the thread -------------------------------------------------------------------------------


def test_the_guard_thread_rolls_back_and_survives_failures(root, store, caplog):
    set_canary(root)
    traffic(store, failed=80)
    broken = artifacts.model_dir(root, "aaa")  # sorts first; its registry file is unreadable
    broken.mkdir()
    (broken / artifacts.REGISTRY_FILE).write_text("{not json")

    worker = guard.Guard(store, root, interval_seconds=0.05)

    def failures():
        return [r for r in caplog.records if r.message == "rollout guard failed for a model"]

    with caplog.at_level(logging.ERROR):
        worker.start()
        worker.start()  # a second start does not start a second thread
        try:
            wait_until(lambda: canary(root)["weight"] == 0.0, timeout=5, message="canary rolled back")
            passes = len(failures())
            # more passes after the rollback, each failing on "aaa": the thread carried on
            wait_until(lambda: len(failures()) >= passes + 2, timeout=5, message="two more passes")
            assert worker.running
        finally:
            worker.stop()
    assert not worker.running
    assert canary(root) == {"version": 2, "weight": 0.0}
    assert [e["action"] for e in history(root)].count("rollout.auto_rollback") == 1
    assert len(failures()) >= 3 and {r.model for r in failures()} == {"aaa"}


def section(accuracy=None, labelled=0, status="insufficient", psi=None, drift_status="insufficient"):
    return {"performance": {"status": status, "labelled": labelled, "metrics": {} if accuracy is None else
                            {"accuracy": accuracy}},
            "drift": {"prediction": {"status": drift_status, "psi": psi, "n": 500}}}


@pytest.mark.parametrize("rules, monitoring, broken", [
    ({"min_live_accuracy": 0.9}, section(0.8, 120, "alert"), "live accuracy 0.8 < 0.9 over 120 labelled predictions"),
    ({"min_live_accuracy": 0.9}, section(0.95, 120, "ok"), None),
    ({"min_live_accuracy": 0.9}, section(0.5, 10, "insufficient"), None),  # too few labels never rolls back
    ({"max_prediction_psi": 0.2}, section(psi=0.4, drift_status="alert"),
     "prediction drift PSI 0.4 > 0.2 over 500 predictions"),
    ({"max_prediction_psi": 0.2}, section(psi=0.9, drift_status="insufficient"), None),
])
def test_monitoring_rules_read_the_canarys_live_figures(rules, monitoring, broken):
    figures = {"requests": 100, "error_rate": 0.0, "p99_ms": 5.0, "monitoring": monitoring}
    assert guard.evaluate({**rules, "min_requests": 10}, figures) == ([broken] if broken else [])


def test_monitoring_rules_judge_only_figures_since_the_window_and_the_last_rollback(root, store):
    asked = []

    def monitor(name, version, since):
        asked.append(since)
        return section(0.1, 200, "alert")

    now = time.time()
    set_canary(root, weight=50.0, min_live_accuracy=0.9, min_requests=10, window_seconds=600)
    traffic(store, ok=20)
    entry = guard.enforce(store, root, MODEL, now=now, monitor=monitor)
    assert entry["broken"] == ["live accuracy 0.1 < 0.9 over 200 labelled predictions"]
    assert asked == [pytest.approx(now - 600)]
    # turned back on: the figures asked for start at that rollback, not at the old window
    with registry_anchor.registry_changes(store):
        registry.update(root, MODEL, lambda s: s["rollout"]["canary"].update(weight=50.0) or {"action": "test"},
                        actor="t")
    rolled_back_at = time.time()
    traffic(store, ok=20, ts=rolled_back_at + 1)
    guard.enforce(store, root, MODEL, now=rolled_back_at + 2, monitor=monitor)
    assert asked[-1] >= rolled_back_at - 1


def test_no_monitoring_figures_are_computed_without_a_monitoring_rule(root, store):
    set_canary(root, weight=50.0, min_requests=10)
    traffic(store, ok=20)
    assert guard.enforce(store, root, MODEL, monitor=lambda *a: pytest.fail("monitor called")) is None


def test_an_automatic_rollback_is_in_the_audit_trail(root, store):

    set_canary(root)
    traffic(store, ok=88, failed=8, fallbacks=4)
    entry = guard.enforce(store, root, MODEL)
    [record] = audit.find(store, "rollout.auto_rollback")
    assert (record.actor, record.target, record.hash) == ("guard", f"model:{MODEL}", entry["audit"])
    assert record.details["rollout"]["canary"] == {"version": 2, "weight": 0.0}
    assert audit.verify(store).ok


def test_the_error_rate_is_exact_when_latencies_are_sampled(root, store, monkeypatch):
    monkeypatch.setattr("service.models.comparison.MAX_TRAFFIC_ROWS", 10)
    set_canary(root)
    traffic(store, failed=20, ts=time.time() - 60)  # older than every request the sample reads
    traffic(store, ok=80)
    assert guard.enforce(store, root, MODEL)["broken"] == ["error rate 0.2 > 0.05 over 100 requests"]


def test_p99_is_judged_on_the_newest_requests(root, store, monkeypatch):
    monkeypatch.setattr("service.models.comparison.MAX_TRAFFIC_ROWS", 10)
    set_canary(root, max_error_rate=None, max_p99_ms=100.0)
    traffic(store, ok=60, latency=500.0, ts=time.time() - 60)  # slow, but before the newest ten
    traffic(store, ok=10, latency=20.0)
    assert guard.enforce(store, root, MODEL) is None
    traffic(store, ok=10, latency=400.0)
    assert guard.enforce(store, root, MODEL)["broken"] == ["p99 latency 400.0 ms > 100 ms over 80 requests"]
