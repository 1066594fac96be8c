"""An alert rule's retrain action: the rules file's options, one action per firing, the command it runs."""

from __future__ import annotations

import sys

import pytest

from service.monitoring.alert_rules import evaluate, parse_rule
from service.monitoring.alerts import AlertManager
from service.monitoring.notify import Notifier
from service.retrain.trigger import command
from service.store import Store

TABLE = {"name": "accuracy_retrain", "description": "accuracy fell", "metric": "performance.metrics.accuracy",
         "op": "<", "alert": 0.9, "samples": "performance.labelled", "min_samples": 10}


def test_a_rule_may_name_retrain_with_its_options():
    rule = parse_rule({**TABLE, "action": "retrain", "retrain": {"train": "base.csv", "then": "canary:10",
                                                                   "min_gain": 0.01, "since": "7d"}})
    assert rule.action == "retrain"
    assert dict(rule.retrain) == {"train": "base.csv", "then": "canary:10", "min_gain": 0.01, "since": "7d"}
    assert parse_rule(TABLE).action is None


@pytest.mark.parametrize(("extra", "message"), [
    ({"action": "page"}, "key 'action'"),
    ({"action": "retrain"}, "needs a \\[rules.retrain\\] table with train"),
    ({"retrain": {"train": "x.csv"}}, "needs action"),
    ({"action": "retrain", "retrain": {"train": "x.csv", "then": "promote"}}, "never promotes"),
    ({"action": "retrain", "retrain": {"train": "x.csv", "promote": True}}, "unknown option 'promote'"),
    ({"action": "retrain", "retrain": {"train": "x.csv", "min_gain": -1}}, "retrain.min_gain"),
])
def test_a_bad_action_is_refused_naming_the_rule_and_key(extra, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_rule({**TABLE, **extra})
    assert "accuracy_retrain" in str(caught.value)


def test_the_command_a_firing_rule_runs():
    args = command("breast-cancer", "accuracy_retrain", {"train": "/data/base.csv", "then": "shadow", "min_gain": 0.02})
    assert args == [sys.executable, "-m", "service", "retrain", "breast-cancer", "--train", "/data/base.csv",
                    "--on-alert", "accuracy_retrain", "--min-gain", "0.02", "--then", "shadow"]


def test_the_action_runs_once_when_the_rule_starts_firing(tmp_path):
    rule = parse_rule({**TABLE, "action": "retrain", "retrain": {"train": "base.csv"}})
    plain = parse_rule({**TABLE, "name": "no_action"})
    started = []
    store = Store(tmp_path / "alerts.sqlite")
    manager = AlertManager(store, [rule, plain], Notifier(), on_action=lambda r, t: started.append((r.name, t.model)))
    low = {"performance": {"metrics": {"accuracy": 0.7}, "labelled": 50}}
    for now in (1.0, 2.0, 3.0):  # firing, still firing, still firing
        manager.apply("m", 1, evaluate(manager.rules.values(), "m", 1, low), now)
    assert started == [("accuracy_retrain", "m")]
    fine = {"performance": {"metrics": {"accuracy": 0.95}, "labelled": 50}}
    manager.apply("m", 1, evaluate(manager.rules.values(), "m", 1, fine), 4.0)
    manager.apply("m", 1, evaluate(manager.rules.values(), "m", 1, low), 5.0)  # fires again: a new run
    assert started == [("accuracy_retrain", "m"), ("accuracy_retrain", "m")]
    store.close()
