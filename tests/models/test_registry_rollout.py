import json
import multiprocessing
import stat

import pytest

from service.models import artifacts, registry
from service.models.rollout import DEFAULT_RULES
from tests import builders
from tests.builders import flip_byte


def package(root, name="m", signing_key=None):
    return builders.package(root, name, signing_key, record=True)["version"]



@pytest.fixture
def root(tmp_path):
    """Model ``m`` with versions 1-4 and ``production`` at 1."""
    for _ in range(4):
        package(tmp_path)
    return tmp_path


def registry_file(root, name="m"):
    return root / name / "registry.json"


def state(root):
    return registry.read_state(root, "m")


def refused(root, message, call, *args, **kwargs):
    """Assert that ``call`` raises ValueError matching ``message`` and leaves registry.json byte-identical."""
    before = registry_file(root).read_bytes()
    with pytest.raises(ValueError, match=message):
        call(root, "m", *args, **kwargs)
    assert registry_file(root).read_bytes() == before


# -- state format ------------------------------------------------------------------------------


def test_an_old_file_reads_with_rollout_defaults(root):
    registry_file(root).write_text(json.dumps({"labels": {"production": 1}, "history": [], "note": "kept"}))
    read = state(root)
    assert read == {"labels": {"production": 1},
                    "rollout": {"canary": None, "shadow": [], "fallback": None, "budget_ms": None, "rules": DEFAULT_RULES},
                    "production_stack": [], "history": [], "note": "kept"}
    assert list(read)[-1] == "history"
    # a partial rollout (e.g. written by a newer rule set) is filled field by field
    registry_file(root).write_text(json.dumps({"labels": {}, "rollout": {"shadow": [2], "rules": {"min_requests": 9}}}))
    assert state(root)["rollout"]["shadow"] == [2]
    assert state(root)["rollout"]["rules"] == {**DEFAULT_RULES, "min_requests": 9}
    assert state(root)["rollout"]["canary"] is None


def test_a_missing_file_reads_as_the_full_empty_state(tmp_path):
    assert registry.read_state(tmp_path, "m") == registry.empty_state()
    assert registry.empty_state()["rollout"]["rules"] is not DEFAULT_RULES  # callers may mutate it


@pytest.mark.parametrize("bad", [{"rollout": []}, {"rollout": None}, {"production_stack": {}},
                                 {"rollout": {"rules": [1]}}])
def test_a_malformed_rollout_is_an_artifact_error(root, bad):
    registry_file(root).write_text(json.dumps({"labels": {}, "history": [], **bad}))
    with pytest.raises(registry.ArtifactError, match="not a registry state"):
        state(root)


def test_every_change_writes_the_documented_shape(root):
    registry.set_rollout(root, "m", canary={"version": 3, "weight": 10}, shadow=[4], fallback=2, budget_ms=250,
                         rules={"max_p99_ms": 300}, actor="alice", reason="try v3")
    on_disk = json.loads(registry_file(root).read_text())
    assert list(on_disk) == ["labels", "rollout", "production_stack", "history"]
    assert on_disk["rollout"] == {"canary": {"version": 3, "weight": 10.0}, "shadow": [4], "fallback": 2,
                                  "budget_ms": 250.0, "rules": {**DEFAULT_RULES, "max_p99_ms": 300.0}}


# -- set_rollout ---------------------------------------------------------------------------------


def test_set_rollout_changes_only_what_is_given_and_records_before_and_after(root):
    first = registry.set_rollout(root, "m", canary={"version": 2, "weight": 5}, actor="alice", reason="canary v2")
    assert first["action"] == "rollout.set" and first["actor"] == "alice" and first["reason"] == "canary v2"
    assert first["before"] == registry.empty_state()["rollout"]
    assert first["after"]["canary"] == {"version": 2, "weight": 5.0}

    second = registry.set_rollout(root, "m", shadow=[3, 4], rules={"max_error_rate": None}, actor="bob")
    assert second["before"] == first["after"]
    after = state(root)["rollout"]
    assert after["canary"] == {"version": 2, "weight": 5.0}  # kept
    assert after["shadow"] == [3, 4]
    assert after["rules"] == {**DEFAULT_RULES, "max_error_rate": None}

    registry.set_rollout(root, "m", canary={"version": 2, "weight": 12.5}, actor="bob")
    assert state(root)["rollout"]["canary"]["weight"] == 12.5
    registry.set_rollout(root, "m", canary=None, fallback=None, budget_ms=None, shadow=[], actor="bob", reason="end")
    assert state(root)["rollout"] == {**registry.empty_state()["rollout"], "rules": after["rules"]}
    assert [e["action"] for e in state(root)["history"]][-4:] == ["rollout.set"] * 4


@pytest.mark.parametrize("kwargs, message", [
    ({}, "nothing to change"),
    ({"canary": {"version": 1, "weight": 10}}, "version 1 is production; a canary must be another version"),
    ({"canary": {"version": 9, "weight": 10}}, "model 'm' has no version 9"),
    ({"canary": {"version": 2, "weight": 100.5}}, "canary weight must be a number from 0 to 100"),
    ({"canary": {"version": 2}}, "canary must be"),
    ({"shadow": [1]}, "version 1 is production; it cannot also be a shadow"),
    ({"shadow": [2, 2]}, "shadow versions must be distinct"),
    ({"shadow": [9]}, "model 'm' has no version 9"),
    ({"shadow": 2}, "shadow must be a list"),
    ({"fallback": 9}, "model 'm' has no version 9"),
    ({"fallback": "2"}, "fallback must be a positive integer"),
    ({"budget_ms": 0}, "budget_ms must be a number from 0.1 to 600000"),
    ({"budget_ms": True}, "budget_ms must be a number from 0.1 to 600000"),
    ({"rules": {"max_error_rate": 2}}, "max_error_rate must be a number from 0 to 1"),
    ({"rules": {"speed": 1}}, "1 unknown rule name"),
    ({"canary": {"version": 2, "weight": 10}, "shadow": [2]}, "version 2 cannot be both the canary and a shadow"),
])
def test_set_rollout_refusals_leave_the_file_untouched(root, kwargs, message):
    refused(root, message, registry.set_rollout, **kwargs, actor="a")


def test_set_rollout_refuses_versions_that_fail_verification(root):
    flip_byte(root / "m" / "3" / "model.joblib")
    for kwargs in ({"canary": {"version": 3, "weight": 1}}, {"shadow": [2, 3]}, {"fallback": 3}):
        refused(root, "version 3 of 'm' cannot be loaded: file model.joblib does not match its sha256",
                registry.set_rollout, **kwargs, actor="a")
    refused(root, "version 2 of 'm' cannot be loaded: manifest is not signed",
            registry.set_rollout, fallback=2, actor="a", signing_key="k")


def test_a_canary_needs_a_production_version(root):
    registry.remove_label(root, "m", "production", actor="a")
    refused(root, "has no production version to run a canary against",
            registry.set_rollout, canary={"version": 2, "weight": 10}, actor="a")


def test_a_shadow_set_before_a_canary_of_the_same_version_is_refused(root):
    registry.set_rollout(root, "m", shadow=[3], actor="a")
    refused(root, "version 3 cannot be both", registry.set_rollout, canary={"version": 3, "weight": 10}, actor="a")


# -- production stack, promote, rollback -----------------------------------------------------------


def test_setting_production_pushes_the_previous_one(root):
    registry.set_label(root, "m", "production", 2, actor="a")
    registry.set_label(root, "m", "production", 2, actor="a")  # no change, nothing to remember
    registry.set_label(root, "m", "staging", 3, actor="a")
    registry.set_label(root, "m", "production", 3, actor="a")
    assert state(root)["production_stack"] == [1, 2]
    assert state(root)["labels"] == {"production": 3, "staging": 3}


def test_setting_production_to_the_canary_ends_the_canary(root):
    registry.set_rollout(root, "m", canary={"version": 2, "weight": 10}, shadow=[3], actor="a")
    entry = registry.set_label(root, "m", "production", 2, actor="a")
    assert entry["canary_ended"] == {"version": 2, "weight": 10.0}
    registry.set_label(root, "m", "production", 3, actor="a")
    assert state(root)["rollout"]["canary"] is None and state(root)["rollout"]["shadow"] == []
    assert state(root)["history"][-1]["shadow_removed"] == 3


def test_promote_makes_the_canary_production(root):
    registry.set_rollout(root, "m", canary={"version": 3, "weight": 25}, actor="a")
    entry = registry.promote(root, "m", actor="bob", reason="looks good")
    assert {k: v for k, v in entry.items() if k != "at"} == {
        "actor": "bob", "action": "promote", "from": 1, "to": 3, "canary": {"version": 3, "weight": 25.0},
        "reason": "looks good"}
    assert state(root)["labels"]["production"] == 3
    assert state(root)["rollout"]["canary"] is None
    assert state(root)["production_stack"] == [1]
    refused(root, "model 'm' has no canary to promote", registry.promote, actor="a")


def test_promote_refuses_a_canary_that_no_longer_verifies(root):
    registry.set_rollout(root, "m", canary={"version": 3, "weight": 25}, actor="a")
    flip_byte(root / "m" / "3" / "model.joblib")
    refused(root, "version 3 of 'm' cannot be loaded", registry.promote, actor="a")


def test_rollback_round_trip(root):
    refused(root, "model 'm' has no previous production version to roll back to", registry.rollback, actor="a")
    registry.set_label(root, "m", "production", 2, actor="a")
    registry.set_rollout(root, "m", canary={"version": 4, "weight": 10}, actor="a")
    entry = registry.rollback(root, "m", actor="oncall", reason="errors up")
    assert (entry["action"], entry["from"], entry["to"], entry["reason"]) == ("rollback", 2, 1, "errors up")
    assert entry["canary_ended"] == {"version": 4, "weight": 10.0}
    after = state(root)
    assert after["labels"]["production"] == 1
    assert after["production_stack"] == [] and after["rollout"]["canary"] is None
    refused(root, "no previous production version", registry.rollback, actor="a")


def test_promote_then_rollback_then_rollback_again_walks_the_stack(root):
    registry.set_label(root, "m", "production", 2, actor="a")
    registry.set_rollout(root, "m", canary={"version": 3, "weight": 50}, actor="a")
    registry.promote(root, "m", actor="a")
    assert state(root)["production_stack"] == [1, 2]
    assert registry.rollback(root, "m", actor="a")["to"] == 2
    assert registry.rollback(root, "m", actor="a")["to"] == 1
    assert state(root)["labels"]["production"] == 1


def test_rollback_refuses_a_target_that_no_longer_verifies(root):
    registry.set_label(root, "m", "production", 2, actor="a")
    flip_byte(root / "m" / "1" / "model.joblib")
    refused(root, "version 1 of 'm' cannot be loaded", registry.rollback, actor="a")


def test_the_stack_is_bounded(root):
    for i in range(registry.STACK_LIMIT + 5):
        registry.set_label(root, "m", "production", 1 + i % 2, actor="a")
    assert len(state(root)["production_stack"]) == registry.STACK_LIMIT


# -- gc --------------------------------------------------------------------------------------------


def add_versions(root, count):
    for _ in range(count):
        package(root)


def test_gc_keeps_the_newest_and_everything_in_use(root):
    add_versions(root, 6)  # versions 1..10, production 1
    registry.set_label(root, "m", "production", 2, actor="a")  # 1 becomes the rollback target
    registry.set_label(root, "m", "staging", 3, actor="a")
    registry.set_rollout(root, "m", canary={"version": 4, "weight": 5}, shadow=[5], fallback=6, actor="a")
    assert registry.protected_versions(state(root)) == {1, 2, 3, 4, 5, 6}

    before = registry_file(root).read_bytes()
    assert registry.gc(root, "m", keep=2, actor="a", dry_run=True) == [7, 8]
    assert registry_file(root).read_bytes() == before
    assert artifacts.list_versions(root, "m") == list(range(1, 11))

    assert registry.gc(root, "m", keep=2, actor="janitor", reason="space") == [7, 8]
    assert artifacts.list_versions(root, "m") == [1, 2, 3, 4, 5, 6, 9, 10]
    assert not [p for p in (root / "m").iterdir() if p.name.startswith(".gc-")]
    entry = state(root)["history"][-1]
    assert (entry["action"], entry["deleted"], entry["keep"], entry["actor"], entry["reason"]) == (
        "gc", [7, 8], 2, "janitor", "space")
    # a second run finds nothing and records nothing
    assert registry.gc(root, "m", keep=2, actor="a") == []
    assert state(root)["history"][-1] == entry


def test_gc_deletes_everything_unused_when_keep_is_one(root):
    assert registry.gc(root, "m", keep=1, actor="a") == [2, 3]
    assert artifacts.list_versions(root, "m") == [1, 4]


def test_gc_drops_deleted_versions_from_deeper_in_the_stack(root):
    for version in (2, 3, 2):
        registry.set_label(root, "m", "production", version, actor="a")
    assert state(root)["production_stack"] == [1, 2, 3]
    assert registry.gc(root, "m", keep=1, actor="a") == [1]  # 3 is the rollback target, 2 is production
    assert state(root)["production_stack"] == [2, 3]


def test_gc_removes_read_only_files(root):
    mode = stat.S_IMODE((root / "m" / "2" / "model.joblib").stat().st_mode)
    assert mode == 0o444
    registry.gc(root, "m", keep=1, actor="a")
    assert not (root / "m" / "2").exists()


@pytest.mark.parametrize("keep", [0, -1, True, 1.5])
def test_gc_refuses_a_keep_below_one(root, keep):
    refused(root, "keep must be an integer of at least 1", registry.gc, keep=keep, actor="a")


def test_gc_of_an_unknown_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="there is no model 'nope'"):
        registry.gc(tmp_path, "nope", keep=1, actor="a")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_state_write_puts_the_versions_back(root, monkeypatch):
    before = registry_file(root).read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "write_json_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        registry.gc(root, "m", keep=1, actor="a")
    assert artifacts.list_versions(root, "m") == [1, 2, 3, 4]
    assert registry_file(root).read_bytes() == before
    assert not [p for p in (root / "m").iterdir() if p.name.startswith(".gc-")]
    for version in (2, 3):
        artifacts.verify_version(root / "m" / str(version), expected_name="m", expected_version=version)


def test_a_version_deleted_after_it_was_checked_is_refused_under_the_lock(root, monkeypatch):
    checked = registry._loadable

    def check_then_gc(root_, name, version, signing_key):
        checked(root_, name, version, signing_key)
        registry.gc(root_, name, keep=1, actor="racer")

    monkeypatch.setattr(registry, "_loadable", check_then_gc)
    with pytest.raises(ValueError, match="model 'm' has no version 2"):
        registry.set_rollout(root, "m", fallback=2, actor="a")
    assert state(root)["rollout"]["fallback"] is None


# -- concurrency -----------------------------------------------------------------------------------


def _change_rollout(root, barrier, part, count):
    barrier.wait()
    for i in range(count):
        if part == "canary":
            registry.set_rollout(root, "m", canary={"version": 2, "weight": float(i)}, actor="w-canary", reason=str(i))
        else:
            registry.set_rollout(root, "m", budget_ms=float(i + 1), actor="w-budget", reason=str(i))


def test_two_processes_changing_the_rollout_lose_nothing(root):
    context = multiprocessing.get_context("fork")
    barrier, count = context.Barrier(2), 50
    workers = [context.Process(target=_change_rollout, args=(root, barrier, part, count)) for part in ("canary", "budget")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    final = json.loads(registry_file(root).read_text())  # valid JSON
    changes = [e for e in final["history"] if e["action"] == "rollout.set"]
    assert len(changes) == 2 * count
    for actor in ("w-canary", "w-budget"):
        assert [e["reason"] for e in changes if e["actor"] == actor] == [str(i) for i in range(count)]
    # each change started from the state the one before it left: no update was lost
    assert all(a["after"] == b["before"] for a, b in zip(changes, changes[1:], strict=False))
    assert final["rollout"]["canary"] == {"version": 2, "weight": float(count - 1)}
    assert final["rollout"]["budget_ms"] == float(count)


def test_live_metric_rules_must_fit_the_models_task(demo_root, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(demo_root, root)
    with pytest.raises(ValueError, match="min_live_accuracy applies to classification models; 'diabetes' is a regression"):
        registry.set_rollout(root, "diabetes", rules={"min_live_accuracy": 0.9}, actor="t")
    with pytest.raises(ValueError, match="max_live_rmse applies to regression models"):
        registry.set_rollout(root, "breast-cancer", rules={"max_live_rmse": 50}, actor="t")
    registry.set_rollout(root, "diabetes", rules={"max_live_rmse": 60}, actor="t")
    assert registry.read_state(root, "diabetes")["rollout"]["rules"]["max_live_rmse"] == 60
