import json
import logging
import multiprocessing
import os
import re

import pytest

from service.errors import ArtifactError, RegistryUnreadable
from service.models import registry
from service.models import registry_file as registry_file_module
from tests import builders
from tests.builders import flip_byte


def package(root, name="m", signing_key=None):
    return builders.package(root, name, signing_key)



@pytest.fixture
def root(tmp_path):
    for _ in range(3):
        package(tmp_path)
    return tmp_path


def registry_file(root, name="m"):
    return root / name / "registry.json"


def last_good_file(root, name="m"):
    return root / name / ".registry.last-good.json"


def test_a_model_without_registry_file_has_an_empty_state(root):
    assert registry.read_state(root, "m") == registry.empty_state()
    assert registry.empty_state()["labels"] == {} and registry.empty_state()["history"] == []


def test_set_and_remove_labels_record_history(root):
    first = registry.set_label(root, "m", "production", 1, actor="alice", reason="first release")
    second = registry.set_label(root, "m", "production", 2, actor="bob", reason="better")
    registry.set_label(root, "m", "staging", 3, actor="bob")
    removed = registry.remove_label(root, "m", "staging", actor="carol", reason="done testing")

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["at"])
    assert {k: v for k, v in first.items() if k != "at"} == {
        "actor": "alice", "action": "label.set", "label": "production", "version": 1, "previous": None,
        "reason": "first release"}
    assert (second["previous"], second["version"], second["actor"]) == (1, 2, "bob")
    assert {k: v for k, v in removed.items() if k != "at"} == {
        "actor": "carol", "action": "label.remove", "label": "staging", "previous": 3, "reason": "done testing"}

    state = json.loads(registry_file(root).read_text())
    assert state["labels"] == {"production": 2}
    assert [(e["action"], e["label"], e.get("version"), e["previous"]) for e in state["history"]] == [
        ("label.set", "production", 1, None), ("label.set", "production", 2, 1),
        ("label.set", "staging", 3, None), ("label.remove", "staging", None, 3)]
    assert state == registry.read_state(root, "m")
    # atomic writes leave only the state, its last-good copy and the lock file behind
    assert sorted(p.name for p in (root / "m").iterdir() if not p.is_dir()) == [
        ".registry.last-good.json", ".registry.lock", "registry.json"]
    assert json.loads(last_good_file(root).read_text()) == state


def test_removing_an_unset_label_raises_and_changes_nothing(root):
    registry.set_label(root, "m", "production", 1, actor="a")
    before = registry_file(root).read_bytes()
    with pytest.raises(ValueError, match="has no label .staging."):
        registry.remove_label(root, "m", "staging", actor="a")
    assert registry_file(root).read_bytes() == before


def test_set_label_refuses_a_version_that_fails_verification(root):
    registry.set_label(root, "m", "production", 1, actor="a")
    before = registry_file(root).read_bytes()
    flip_byte(root / "m" / "2" / "model.joblib")
    with pytest.raises(ArtifactError, match="file model.joblib does not match its sha256 in the manifest"):
        registry.set_label(root, "m", "production", 2, actor="a")
    assert registry_file(root).read_bytes() == before


def test_set_label_refuses_a_missing_version(root):
    with pytest.raises(ValueError, match="model 'm' has no version 9"):
        registry.set_label(root, "m", "production", 9, actor="a")
    assert not registry_file(root).exists()


def test_set_label_checks_the_signature_when_a_key_is_given(root):
    with pytest.raises(ArtifactError, match="not signed"):
        registry.set_label(root, "m", "production", 1, actor="a", signing_key="k")
    package(root, signing_key="k")
    assert registry.set_label(root, "m", "production", 4, actor="a", signing_key="k")["version"] == 4


@pytest.mark.parametrize("label", ["Prod", "a b", "", "../x", "x" * 65, None])
def test_bad_label_names_are_refused(tmp_path, label):
    with pytest.raises(ValueError, match="labels match"):
        registry.set_label(tmp_path, "m", label, 1, actor="a")
    with pytest.raises(ValueError, match="labels match"):
        registry.remove_label(tmp_path, "m", label, actor="a")


@pytest.mark.parametrize("name, version", [("../m", 1), ("m", 0), ("m", "../1")])
def test_bad_names_and_versions_are_refused_before_touching_disk(tmp_path, name, version):
    with pytest.raises(ValueError, match="model names match|versions are positive integers"):
        registry.set_label(tmp_path, name, "production", version, actor="a")
    assert list(tmp_path.iterdir()) == []


def test_record_packaged_makes_only_the_first_version_production(tmp_path):
    first = registry.record_packaged(tmp_path, package(tmp_path), actor="ci")
    second = registry.record_packaged(tmp_path, package(tmp_path), actor="ci")
    assert first["action"] == "version.packaged" and first["version"] == 1 and first["label"] == "production"
    assert second["version"] == 2 and "label" not in second
    state = registry.read_state(tmp_path, "m")
    assert state["labels"] == {"production": 1}
    assert [e["version"] for e in state["history"]] == [1, 2]


def test_a_corrupt_registry_file_is_an_artifact_error(root):
    registry_file(root).write_text("{oops")
    with pytest.raises(ArtifactError, match="registry.json is not valid JSON"):
        registry.read_state(root, "m")


def _flip_labels(root, barrier, label, count):
    barrier.wait()
    for i in range(count):
        registry.set_label(root, "m", label, 1 + i % 3, actor=f"worker-{label}", reason=str(i))


def test_two_processes_changing_labels_lose_no_history(root):
    context = multiprocessing.get_context("fork")
    barrier, count = context.Barrier(2), 50
    workers = [context.Process(target=_flip_labels, args=(root, barrier, label, count))
               for label in ("production", "staging")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    state = registry.read_state(root, "m")
    assert len(state["history"]) == 2 * count
    for label in ("production", "staging"):
        mine = [e for e in state["history"] if e["label"] == label]
        assert [e["reason"] for e in mine] == [str(i) for i in range(count)]
        # each entry's "previous" is what the one before it set: no update was lost
        assert [e["previous"] for e in mine] == [None] + [e["version"] for e in mine[:-1]]
    assert state["labels"] == {"production": 1 + (count - 1) % 3, "staging": 1 + (count - 1) % 3}


def test_a_registry_file_that_is_not_a_state_is_refused(root):
    registry_file(root).parent.mkdir(parents=True, exist_ok=True)
    registry_file(root).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="not a registry state"):
        registry.read_state(root, "m")


# -- the last-good copy -------------------------------------------------------------------------


@pytest.fixture
def labelled(root):
    registry.set_label(root, "m", "production", 1, actor="a")
    registry.set_label(root, "m", "staging", 2, actor="a")
    return root


def corrupt(root, name="m", text="{broken"):
    registry_file(root, name).write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("text, reason", [
    ("{broken", "registry.json is not valid JSON"),
    ("[1, 2]", "registry.json is not a registry state"),
    ('{"labels": {"production": "1"}, "history": []}', "registry.json is not a registry state"),
    ('{"labels": {}, "production_stack": [0], "history": []}', "registry.json is not a registry state"),
    ('{"labels": {}, "history": ["x"]}', "registry.json is not a registry state"),
    (b'{"labels": "\xff"}', "registry.json is not valid JSON"),
])
def test_an_unreadable_file_is_served_from_the_last_good_copy(labelled, text, reason):
    good = registry.read_state(labelled, "m")
    corrupt(labelled, text=text)
    state, error = registry.read_serving_state(labelled, "m")
    assert state == good
    assert error.startswith(reason)
    assert str(labelled) not in error  # shown to API callers: never the server's path


def test_a_good_file_is_served_as_it_is_without_error(labelled):
    assert registry.read_serving_state(labelled, "m") == (registry.read_state(labelled, "m"), None)


def test_no_change_is_made_over_an_unreadable_file(labelled):
    corrupt(labelled)
    copy_before = last_good_file(labelled).read_bytes()
    for change in (lambda: registry.set_label(labelled, "m", "production", 3, actor="a"),
                   lambda: registry.remove_label(labelled, "m", "staging", actor="a"),
                   lambda: registry.set_rollout(labelled, "m", shadow=[3], actor="a"),
                   lambda: registry.promote(labelled, "m", actor="a"),
                   lambda: registry.rollback(labelled, "m", actor="a")):
        with pytest.raises(RegistryUnreadable) as caught:
            change()
        assert caught.value.last_good and caught.value.model == "m"
        assert "python -m service registry restore m" in str(caught.value)
        assert str(labelled) not in str(caught.value)
    assert registry_file(labelled).read_text() == "{broken"
    assert last_good_file(labelled).read_bytes() == copy_before


def test_a_lost_file_with_a_last_good_copy_is_unreadable_not_empty(labelled):
    registry_file(labelled).unlink()
    with pytest.raises(RegistryUnreadable, match="registry.json is missing"):
        registry.read_state(labelled, "m")
    with pytest.raises(RegistryUnreadable):
        registry.set_label(labelled, "m", "canary", 3, actor="a")
    assert not registry_file(labelled).exists()
    assert registry.read_serving_state(labelled, "m")[0]["labels"] == {"production": 1, "staging": 2}
    assert registry.restore(labelled, "m", actor="ops")["kept"] is None  # nothing broken to keep aside
    assert registry.read_state(labelled, "m")["labels"] == {"production": 1, "staging": 2}


def test_no_file_and_no_copy_is_unreadable_for_serving_with_the_files_reason(labelled):
    corrupt(labelled)
    last_good_file(labelled).unlink()
    with pytest.raises(RegistryUnreadable, match="registry.json is not valid JSON") as caught:
        registry.read_serving_state(labelled, "m")
    assert not caught.value.last_good
    assert "repair registry.json by hand" in str(caught.value)


def test_a_file_written_before_copies_existed_gains_one_on_the_first_serving_read(labelled):
    last_good_file(labelled).unlink()
    registry.read_state(labelled, "m")  # plain reads (CLI, comparison) write nothing
    assert not last_good_file(labelled).exists()
    state, error = registry.read_serving_state(labelled, "m")
    assert error is None
    assert json.loads(last_good_file(labelled).read_text()) == json.loads(registry_file(labelled).read_text())
    corrupt(labelled)
    assert registry.read_serving_state(labelled, "m")[0] == state


def test_a_copy_older_than_a_good_file_is_refreshed(labelled):
    edited = json.loads(registry_file(labelled).read_text())
    edited["labels"]["staging"] = 3
    registry_file(labelled).write_text(json.dumps(edited))  # a hand edit: no copy written
    copy_time = registry_file(labelled).stat().st_mtime_ns - 1_000_000_000
    os.utime(last_good_file(labelled), ns=(copy_time, copy_time))
    registry.read_serving_state(labelled, "m")
    assert json.loads(last_good_file(labelled).read_text())["labels"]["staging"] == 3


def test_a_read_only_install_serves_without_writing_a_copy(labelled, monkeypatch):
    last_good_file(labelled).unlink()
    monkeypatch.setattr(registry_file_module.os, "access", lambda path, mode: False)
    assert registry.read_serving_state(labelled, "m")[1] is None
    assert not last_good_file(labelled).exists()


def test_a_copy_that_fails_to_write_does_not_fail_the_change(labelled, monkeypatch, caplog):
    real = registry_file_module.artifacts.write_json_atomic

    def full_disk_for_the_copy(path, data, *args):
        if path.name == registry.LAST_GOOD_FILE:
            raise OSError(28, "No space left on device")
        return real(path, data, *args)

    monkeypatch.setattr(registry_file_module.artifacts, "write_json_atomic", full_disk_for_the_copy)
    with caplog.at_level(logging.WARNING, logger="service.models.registry_file"):
        entry = registry.set_label(labelled, "m", "production", 3, actor="a")
    assert entry["version"] == 3 and registry.read_state(labelled, "m")["labels"]["production"] == 3
    assert [r.reason for r in caplog.records] == ["[Errno 28] No space left on device"]
    assert json.loads(last_good_file(labelled).read_text())["labels"]["production"] == 1  # stale for now
    monkeypatch.undo()
    copy_time = registry_file(labelled).stat().st_mtime_ns - 1
    os.utime(last_good_file(labelled), ns=(copy_time, copy_time))
    registry.read_serving_state(labelled, "m")
    assert json.loads(last_good_file(labelled).read_text())["labels"]["production"] == 3


def test_restore_puts_back_the_last_good_state_and_keeps_the_broken_file(labelled):
    good = registry.read_state(labelled, "m")
    corrupt(labelled)
    entry = registry.restore(labelled, "m", actor="ops", reason="disk fault")
    assert (entry["action"], entry["actor"], entry["reason"]) == ("registry.restore", "ops", "disk fault")
    restored = registry.read_state(labelled, "m")
    assert restored["labels"] == good["labels"] and restored["history"][:-1] == good["history"]
    assert (labelled / "m" / entry["kept"]).read_text() == "{broken"
    assert entry["kept"].startswith(".registry.broken-")
    assert registry.set_label(labelled, "m", "canary", 3, actor="a")["version"] == 3  # changes work again


def test_restore_refuses_a_readable_file_and_a_missing_copy(labelled):
    before = registry_file(labelled).read_bytes()
    with pytest.raises(ValueError, match="is readable; there is nothing to restore"):
        registry.restore(labelled, "m", actor="ops")
    assert registry_file(labelled).read_bytes() == before
    corrupt(labelled)
    last_good_file(labelled).unlink()
    with pytest.raises(RegistryUnreadable, match="no readable last-good copy"):
        registry.restore(labelled, "m", actor="ops")
    assert registry_file(labelled).read_text() == "{broken"
