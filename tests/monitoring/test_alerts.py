import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from service.monitoring.alerts import AlertLoop, AlertManager, Evaluation, Rule, evaluate, load_rules, parse_rule
from service.store import Store
from tests.builders import race


class Recorder:
    """A notifier with the real one's surface that remembers what it was told."""

    def __init__(self):
        self.sent = []

    def send(self, notification):
        self.sent.append(notification)


def rule(**overrides) -> Rule:
    table = {"name": "errors", "description": "too many errors", "metric": "traffic.error_rate", "op": ">",
             "warn": 0.05, "alert": 0.2, "samples": "traffic.requests", "min_samples": 50}
    table.update(overrides)
    return parse_rule(table)


def report(error_rate=0.0, requests=100, **sections) -> dict:
    return {"n": 500, "traffic": {"requests": requests, "error_rate": error_rate, "p99_ms": 10.0, "fallback_rate": 0.0},
            **sections}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


# --- rules file ----------------------------------------------------------------------------

def test_default_rules_load_and_all_need_samples():
    rules = load_rules(None)
    names = [r.name for r in rules]
    assert len(names) == len(set(names))
    assert {"data_drift", "prediction_drift", "data_quality", "live_performance", "bias_gap", "error_rate",
            "p99_latency", "fallback_rate"} <= set(names)
    assert all(r.min_samples > 0 for r in rules)
    errors = next(r for r in rules if r.name == "error_rate")
    assert (errors.op, errors.warn, errors.alert, errors.samples, errors.min_samples) == (">", 0.05, 0.2, "traffic.requests", 50)


BAD_FILES = [
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\nalert = 1\nmin_samples = 1\ntreshold = 2\n',
     "rule 'x': key 'treshold': unknown key"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = "=>"\nalert = 1\n', "rule 'x': key 'op'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\nalert = 1\n' * 2, "rule 'x': key 'name': duplicate"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\n', "rule 'x': key 'alert'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "drift.status"\nop = ">"\nalert = "alert"\n', "rule 'x': key 'alert'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\nwarn = 5\nalert = 1\n', "rule 'x': key 'warn'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\nalert = 1\nmin_samples = -1\n',
     "rule 'x': key 'min_samples'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\nalert = 1\nfor_seconds = "1m"\n',
     "rule 'x': key 'for_seconds'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "n"\nop = ">"\nalert = 1\nmodels = "iris"\n', "rule 'x': key 'models'"),
    ('[[rules]]\nname = "x"\ndescription = "d"\nmetric = "a..b"\nop = ">"\nalert = 1\n', "rule 'x': key 'metric'"),
    ('[[rules]]\nname = "Bad-Name"\ndescription = "d"\nmetric = "n"\nop = ">"\nalert = 1\n', "rule #1: key 'name'"),
    ('[[rules]]\nname = "x"\nmetric = "n"\nop = ">"\nalert = 1\n', "rule 'x': key 'description'"),
    ('rule = []\n', "unknown top-level key 'rule'"),
    ('disable = ["no_such_rule"]\n', "unknown rule 'no_such_rule'"),
    ('[[rules]\n', "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_invalid_rules_file_is_refused_with_rule_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match="alert rules file") as info:
        load_rules(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_rules_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_rules(tmp_path / "absent.toml")


def test_user_file_replaces_adds_and_disables(tmp_path):
    path = write(tmp_path, """
disable = ["p99_latency"]

[[rules]]
name = "error_rate"
description = "stricter"
metric = "traffic.error_rate"
op = ">="
alert = 0.01
samples = "traffic.requests"
min_samples = 10

[[rules]]
name = "income_drift"
description = "income moved"
metric = "drift.features.income.psi"
op = ">"
warn = 0.1
alert = 0.25
min_samples = 200
models = ["credit"]
""")
    rules = {r.name: r for r in load_rules(path)}
    assert "p99_latency" not in rules and "data_drift" in rules
    assert rules["error_rate"].description == "stricter" and rules["error_rate"].warn is None
    assert rules["income_drift"].models == ("credit",)

    only = write(tmp_path, 'replace_defaults = true\n[[rules]]\nname = "x"\ndescription = "d"\n'
                           'metric = "n"\nop = ">"\nalert = 1\n')
    assert [r.name for r in load_rules(only)] == ["x"]


# --- evaluation ----------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "warn", "alert", "value", "level"), [
    (">", 1, 2, 0.5, "ok"), (">", 1, 2, 1, "ok"), (">", 1, 2, 1.5, "warn"), (">", 1, 2, 3, "alert"),
    (">=", 1, 2, 1, "warn"), (">=", 1, 2, 2, "alert"), (">=", 1, 2, 0.99, "ok"),
    ("<", 0.9, 0.8, 0.95, "ok"), ("<", 0.9, 0.8, 0.85, "warn"), ("<", 0.9, 0.8, 0.8, "warn"), ("<", 0.9, 0.8, 0.7, "alert"),
    ("<=", 0.9, 0.8, 0.9, "warn"), ("<=", 0.9, 0.8, 0.8, "alert"), ("<=", 0.9, 0.8, 0.91, "ok"),
    ("==", "warn", "alert", "ok", "ok"), ("==", "warn", "alert", "warn", "warn"), ("==", "warn", "alert", "alert", "alert"),
    ("==", None, 3, 3, "alert"), ("==", None, 3, 2, "ok"), ("==", None, "alert", 1.0, "ok"),
])
def test_every_op(op, warn, alert, value, level):
    table = {"name": "r", "description": "d", "metric": "x.v", "op": op, "min_samples": 1, "alert": alert}
    if warn is not None:
        table["warn"] = warn
    (ev,) = evaluate([parse_rule(table)], "m", 1, {"n": 10, "x": {"v": value}})
    assert ev.level == level
    assert ev.value == value
    assert ev.threshold == {"alert": alert, "warn": warn}.get(level, warn if warn is not None else alert)


@pytest.mark.parametrize("doc", [
    report(error_rate=0.9, requests=49),                     # too few requests
    {"n": 500, "traffic": {"error_rate": 0.9}},              # no sample count at all
    report(error_rate=None),                                 # no value
    report(error_rate=float("nan")),                         # no data
])
def test_insufficient_samples_or_values(doc):
    (ev,) = evaluate([rule()], "m", 1, doc)
    assert ev.level == "insufficient"


def test_insufficient_status_is_not_ok():
    perf = rule(name="perf", metric="performance.status", op="==", warn="warn", alert="alert",
                samples="performance.labelled", min_samples=0)
    (ev,) = evaluate([perf], "m", 1, {"performance": {"status": "insufficient", "labelled": 3}})
    assert ev.level == "insufficient"


def test_numpy_values_become_plain():
    np = pytest.importorskip("numpy")
    (ev,) = evaluate([rule()], "m", 1, report(error_rate=np.float32(0.5), requests=np.int64(60)))
    assert (ev.level, type(ev.value), ev.samples) == ("alert", float, 60)


def test_models_filter():
    only_iris = rule(models=["iris"])
    assert evaluate([only_iris], "diabetes", 1, report()) == []
    assert len(evaluate([only_iris], "iris", 1, report())) == 1


def test_default_rules_on_a_quiet_and_a_loud_report():
    rules = load_rules(None)
    quiet = {"n": 500, "traffic": {"requests": 120, "error_rate": 0.01, "p99_ms": 12.5, "fallback_rate": 0.0},
             "drift": {"status": "ok", "n": 500, "features": {}, "prediction": {"status": "ok"}},
             "quality": {"status": "ok"}, "performance": {"status": "insufficient", "labelled": 0, "metrics": {}, "delta": {}},
             "bias": {"status": "ok"}}
    levels = {ev.rule: ev.level for ev in evaluate(rules, "m", 1, quiet)}
    assert levels.pop("live_performance") == levels.pop("accuracy_drop") == "insufficient"
    assert set(levels.values()) == {"ok"}
    loud = json.loads(json.dumps(quiet))
    loud["drift"]["status"] = "alert"
    loud["traffic"]["p99_ms"] = 900
    loud["performance"] = {"status": "alert", "labelled": 300, "delta": {"accuracy": -0.2}}
    levels = {ev.rule: ev.level for ev in evaluate(rules, "m", 1, loud)}
    assert levels["data_drift"] == levels["p99_latency"] == levels["live_performance"] == levels["accuracy_drop"] == "alert"


# --- state ---------------------------------------------------------------------------------

@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def store(make_store) -> Store:
    """The shared store, on SQLite then on PostgreSQL (whose races are in test_store_postgres.py)."""
    return make_store("predictions")


def manager(store, rules, notifier, **kwargs) -> AlertManager:
    return AlertManager(store, rules, notifier, **kwargs)


def test_insufficient_samples_never_fire(store, recorder):
    m = manager(store, [rule()], recorder)
    for t in range(10):
        m.apply("m", 1, evaluate(m.rules.values(), "m", 1, report(error_rate=1.0, requests=5)), now=1000.0 + t)
    assert recorder.sent == []
    assert m.active() == []
    (doc,) = m.states()
    assert doc["state"] == "insufficient"


def test_pending_then_firing_after_for_seconds_then_resolved(store, recorder):
    m = manager(store, [rule(for_seconds=60)], recorder)
    loud, quiet = report(error_rate=0.5), report(error_rate=0.0)

    def apply(doc, now):
        return m.apply("m", 1, evaluate(m.rules.values(), "m", 1, doc), now)

    (t,) = apply(loud, 1000.0)
    assert (t.previous, t.state, t.notification) == ("ok", "pending", None)
    assert apply(loud, 1030.0) == []
    (doc,) = m.active()
    assert (doc["state"], doc["since"], doc["value"], doc["threshold"]) == ("pending", 1000.0, 0.5, 0.2)
    (t,) = apply(loud, 1060.0)
    assert (t.previous, t.state, t.notification, t.since) == ("pending", "firing", "firing", 1060.0)
    assert apply(loud, 1090.0) == []
    (t,) = apply(quiet, 1120.0)
    assert (t.previous, t.state, t.notification) == ("firing", "ok", "resolved")
    assert [(n.status, n.rule, n.value, n.threshold) for n in recorder.sent] == [
        ("firing", "errors", 0.5, 0.2), ("resolved", "errors", 0.0, 0.05)]
    assert recorder.sent[0].description == "too many errors"
    assert m.active() == []


def test_condition_that_clears_while_pending_never_notifies(store, recorder):
    m = manager(store, [rule(for_seconds=60)], recorder)
    m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 1000.0)
    (t,) = m.apply("m", 1, [Evaluation("errors", "ok", 0.0, 0.05)], 1030.0)
    assert (t.previous, t.state, t.notification) == ("pending", "ok", None)
    # the clock starts again: another 59 s of trouble is still only pending
    m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 1040.0)
    m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 1099.0)
    assert recorder.sent == [] and m.active()[0]["state"] == "pending"


def test_warn_escalates_to_firing_after_for_seconds_and_steps_down_at_once(store, recorder):
    m = manager(store, [rule(for_seconds=10)], recorder)
    m.apply("m", 1, [Evaluation("errors", "warn", 0.1, 0.05)], 0.0)
    (t,) = m.apply("m", 1, [Evaluation("errors", "warn", 0.1, 0.05)], 10.0)
    assert (t.state, t.notification) == ("warn", "warn")
    assert m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 15.0) == []  # still warn while it holds
    (t,) = m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 25.0)
    assert (t.previous, t.state, t.notification) == ("warn", "firing", "firing")
    (t,) = m.apply("m", 1, [Evaluation("errors", "warn", 0.1, 0.05)], 26.0)
    assert (t.previous, t.state, t.notification) == ("firing", "warn", "warn")
    assert [n.status for n in recorder.sent] == ["warn", "firing", "warn"]


def test_states_are_per_version_json_ready_and_published(store, recorder):
    gauges = {}
    m = manager(store, [rule()], recorder, on_state=lambda *args: gauges.__setitem__(args[:3], args[3]))
    m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 100.0)
    m.apply("m", "2", [Evaluation("errors", "ok", 0.0, 0.05)], 100.0)
    m.apply("other", 1, [Evaluation("errors", "warn", 0.1, 0.05)], 100.0)
    assert gauges == {("m", 1, "errors"): 3, ("m", 2, "errors"): 0, ("other", 1, "errors"): 2}
    active = m.active()
    assert [(a["model"], a["version"], a["state"]) for a in active] == [("m", 1, "firing"), ("other", 1, "warn")]
    assert [a["model"] for a in m.active("other")] == ["other"]
    json.dumps(active, allow_nan=False)
    gauges.clear()
    m.publish()
    assert len(gauges) == 3


def test_failing_notifier_and_callback_do_not_break_apply(store):
    class Broken:
        def send(self, notification):
            raise RuntimeError("boom")

    def on_state(*args):
        raise RuntimeError("boom")

    m = manager(store, [rule()], Broken(), on_state=on_state)
    (t,) = m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 1.0)
    assert t.state == "firing" and m.active()[0]["state"] == "firing"


def test_retire_forgets_versions_no_longer_served(store, recorder):
    m = manager(store, [rule()], recorder)
    m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 1.0)
    m.apply("m", 2, [Evaluation("errors", "ok", 0.0, 0.05)], 1.0)
    (t,) = m.retire({("m", 2)}, 5.0)
    assert (t.version, t.notification) == (1, "resolved")
    assert [(d["version"], d["state"]) for d in m.states()] == [(2, "ok")]


def _apply_in_child(barrier, results, db_path, lines):
    class FileRecorder:
        def send(self, notification):
            with open(lines, "a") as f:
                f.write(notification.status + "\n")

    m = AlertManager(Store(db_path), [rule()], FileRecorder())
    barrier.wait()
    transitions = m.apply("m", 1, [Evaluation("errors", "alert", 0.5, 0.2)], 100.0)
    results.put([t.state for t in transitions])


def test_processes_applying_at_once_notify_once(tmp_path):
    db_path, lines = tmp_path / "p.db", tmp_path / "notified.txt"
    AlertManager(Store(db_path), [rule()], Recorder())  # create the schema before the race
    outcomes = race(_apply_in_child, (db_path, lines), timeout=10)
    assert sorted(outcomes) == [[], [], [], ["firing"]]
    assert lines.read_text().splitlines() == ["firing"]


def test_apply_is_transactional(store, recorder):
    m = manager(store, [rule()], recorder)
    with pytest.raises(sqlite3.Error):
        m.apply("m", 1, [Evaluation("errors", "alert", object(), 0.2)], 1.0)  # cannot be stored
    assert m.states() == [] and recorder.sent == []


# --- the loop ------------------------------------------------------------------------------

def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_loop_survives_a_builder_that_raises(store, recorder, caplog):
    m = manager(store, [rule()], recorder)
    calls = []

    def build():
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("report store unavailable")
        yield "m", 1, report(error_rate=0.5)

    loop = AlertLoop(m, build, interval=0.01)
    loop.start()
    try:
        wait_for(lambda: m.active())
    finally:
        loop.stop()
    assert loop.failures >= 2 and loop.runs >= 3
    assert "alert reports could not be built" in caplog.text
    assert [n.status for n in recorder.sent] == ["firing"]
    assert not any(t.name == "alert-loop" and t.is_alive() for t in threading.enumerate())


def test_loop_survives_one_bad_report_and_evaluates_the_rest(store, recorder):
    m = manager(store, [rule()], recorder)
    loop = AlertLoop(m, lambda: [("m", "not-a-version", {}), ("m", 2, report(error_rate=0.5))], interval=60)
    assert loop.run_once() is True
    loop.stop()
    assert loop.failures == 1
    assert [(a["version"], a["state"]) for a in m.active()] == [(2, "firing")]


def test_only_one_loop_evaluates_and_another_takes_over(store, recorder):
    m = manager(store, [rule()], recorder)
    first = AlertLoop(m, lambda: [("m", 1, report())], interval=60)
    second = AlertLoop(m, lambda: [("m", 1, report())], interval=60)
    if store.path is not None:
        assert first.lock_path == store.path.with_name("predictions.sqlite.alerts.lock")
    else:  # PostgreSQL: a session advisory lock, one evaluator for every replica
        assert first.lock_path is None
    assert first.run_once() is True
    assert second.run_once() is False
    first.stop()
    assert second.run_once() is True
    second.stop()

