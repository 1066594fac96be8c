"""Registry anchors in the audit trail: each change records the digest of the registry.json it
writes, and a file that does not match is refused (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from service.models import auto_rollback, registry, registry_anchor
from service.models.registry_anchor import ANCHORED, REFUSED, RegistryAnchors, anchor_of, compare, root_id
from service.models.registry_file import UNCHECKED, UNVERIFIED, RegistryUnverified, state_digest
from service.security import audit
from service.serving.catalog import FROM_MEMORY, Catalog
from service.store import RequestRecord
from tests.builders import package


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "artifacts"
    package(root, "m", record=True)
    package(root, "m")
    return root


def file_digest(root):
    return state_digest((root / "m" / "registry.json").read_bytes())


def actions(store):
    return [r.action for r in audit.find(store, "")]


def move_production_by_hand(root, version=2):
    path = root / "m" / "registry.json"
    state = json.loads(path.read_text())
    state["labels"]["production"] = version
    path.write_text(json.dumps(state))


class BrokenStore:
    """A store whose database does not answer."""

    def transaction(self, **_):
        raise OSError("connection refused")

    def fetch(self, *_):
        raise OSError("connection refused")


def test_each_audited_change_anchors_the_file_it_writes(root, make_store):
    store = make_store()
    with registry_anchor.registry_changes(store):
        entry = registry.set_label(root, "m", "staging", 2, actor="x")
    record = anchor_of(store, root_id(root), "m")
    assert record.hash == entry["audit"] and record.action == "label.set"
    assert record.details["registry"] == {"root": str(root.resolve()), "sha256": file_digest(root)}


def test_formatting_does_not_count_but_content_does(root):
    path = root / "m" / "registry.json"
    before = file_digest(root)
    path.write_text(json.dumps(json.loads(path.read_text()), indent=7))
    assert file_digest(root) == before
    move_production_by_hand(root)
    assert file_digest(root) != before


def test_a_file_with_no_anchor_is_anchored_once_whoever_reads_it(root, make_store):
    store = make_store()
    workers = [RegistryAnchors(make_store(), actor=f"server:{i}") for i in range(2)]
    for worker in workers * 2:
        worker.verify(root, "m", file_digest(root), stamp=object())
    assert actions(store) == [ANCHORED]
    assert compare(store, root, "m")[0] is True


def test_an_edited_file_is_refused_and_the_refusal_recorded_once(root, make_store):
    store = make_store()
    with registry_anchor.registry_changes(store):
        registry.set_label(root, "m", "staging", 1, actor="x")
    move_production_by_hand(root)
    workers = [RegistryAnchors(make_store(), actor=f"server:{i}") for i in range(2)]
    for worker in workers * 3:
        with pytest.raises(RegistryUnverified) as caught:
            worker.verify(root, "m", file_digest(root), stamp=("same", 1), final=True)
        assert caught.value.code == UNVERIFIED and str(root) not in str(caught.value)
    assert actions(store) == ["label.set", REFUSED]
    (refused,) = audit.find(store, REFUSED)
    assert refused.details["refused"]["sha256"] == file_digest(root)
    assert audit.verify(store).ok
    matches, said = compare(store, root, "m")
    assert matches is False and "does not match the audit trail" in said


def test_a_change_over_an_edited_file_is_refused_and_writes_nothing(root, make_store):
    store = make_store()
    with registry_anchor.registry_changes(store):
        registry.set_label(root, "m", "staging", 1, actor="x")
    move_production_by_hand(root)
    before = (root / "m" / "registry.json").read_bytes()
    with registry_anchor.registry_changes(store), pytest.raises(RegistryUnverified):
        registry.set_label(root, "m", "staging", 2, actor="x")
    assert (root / "m" / "registry.json").read_bytes() == before
    assert "label.set" not in actions(store)[1:]


def test_a_verified_file_read_again_asks_the_store_nothing(root, make_store):
    anchors = RegistryAnchors(make_store())
    anchors.verify(root, "m", file_digest(root), stamp=("file", 1))
    anchors._store = BrokenStore()  # any query now fails
    anchors.verify(root, "m", file_digest(root), stamp=("file", 1))  # a poll over the same file
    with pytest.raises(RegistryUnverified) as caught:  # the file was rewritten: the store is asked
        anchors.verify(root, "m", file_digest(root), stamp=("file", 2))
    assert caught.value.code == UNCHECKED


def test_changes_fail_closed_when_the_store_does_not_answer(root):
    before = (root / "m" / "registry.json").read_bytes()
    with registry_anchor.registry_changes(BrokenStore()), pytest.raises(RegistryUnverified) as caught:
        registry.set_label(root, "m", "staging", 2, actor="x")
    assert caught.value.code == UNCHECKED and "database" in caught.value.reason
    assert (root / "m" / "registry.json").read_bytes() == before


def test_a_change_whose_record_cannot_be_written_is_not_made(root, make_store):
    store = make_store()
    with registry_anchor.registry_changes(store):
        registry.set_label(root, "m", "staging", 1, actor="x")
    before = (root / "m" / "registry.json").read_bytes()
    hook = registry_anchor.registry_hook(BrokenStore())
    token = registry.AUDIT.set(hook)
    try:
        with pytest.raises(OSError):
            registry.set_label(root, "m", "staging", 2, actor="x")
    finally:
        registry.AUDIT.reset(token)
    assert (root / "m" / "registry.json").read_bytes() == before


def test_anchors_are_per_model_whatever_path_the_artifacts_are_mounted_at(root, tmp_path, make_store):
    store = make_store()
    mounted = tmp_path / "mounted-elsewhere"  # the host's CLI and a container see one folder at two paths
    shutil.copytree(root, mounted)
    anchors = RegistryAnchors(store)
    anchors.verify(root, "m", file_digest(root), stamp=1)
    anchors.verify(mounted, "m", file_digest(mounted), stamp=1)
    assert actions(store) == [ANCHORED]  # the same content at another path: verified, not anchored again
    move_production_by_hand(mounted)
    with pytest.raises(RegistryUnverified):
        anchors.verify(mounted, "m", file_digest(mounted), stamp=2)


# -- what a worker's catalog serves ---------------------------------------------------------------


def test_a_worker_keeps_serving_the_verified_state_and_reports_the_refusal(root, make_store):
    store = make_store()
    catalog = Catalog(root, poll_seconds=0, verifier=RegistryAnchors(store))
    catalog.refresh()
    assert catalog.resolve("m").version == 1
    move_production_by_hand(root)
    (root / "m" / registry.LAST_GOOD_FILE).unlink()  # no copy either: the worker's memory is what is left
    for _ in range(3):
        catalog.refresh()
    assert catalog.resolve("m").version == 1
    ready, report = catalog.readiness()
    assert ready is True and report["m"]["registry_code"] == UNVERIFIED and report["m"]["registry"] == FROM_MEMORY
    assert actions(store) == [ANCHORED, REFUSED]
    booted = Catalog(root, poll_seconds=0, verifier=RegistryAnchors(make_store()))
    booted.refresh()  # a worker that never verified anything serves no label rather than the edit
    assert booted.readiness()[0] is False and "production" not in booted.model("m").labels


def test_a_worker_whose_store_stops_answering_keeps_the_state_it_verified(root, make_store):
    store = make_store()
    anchors = RegistryAnchors(store)
    catalog = Catalog(root, poll_seconds=0, verifier=anchors)
    catalog.refresh()
    anchors._store = BrokenStore()
    catalog.refresh()  # the same file: answered from memory, nothing to report
    assert catalog.model("m").registry_error is None
    move_production_by_hand(root)  # changed while nothing can check it
    catalog.refresh()
    state = catalog.model("m")
    assert catalog.resolve("m").version == 1 and state.registry_code == UNCHECKED
    (root / "m" / registry.LAST_GOOD_FILE).unlink()
    booted = RegistryAnchors(BrokenStore())
    fresh = Catalog(root, poll_seconds=0, verifier=booted)
    fresh.refresh()  # booted during the outage: serves the file as it is, and says it is unchecked
    assert fresh.resolve("m").version == 2 and fresh.model("m").registry_code == UNCHECKED
    assert fresh.readiness()[0] is True
    booted._store = store  # the database is back: the edit is found out, and nothing verified is left
    fresh.refresh()
    assert fresh.model("m").registry_code == UNVERIFIED and "production" not in fresh.model("m").labels
    catalog.refresh()
    assert catalog.resolve("m").version == 1  # the worker that verified before still serves that


def test_changes_by_the_tools_while_workers_poll_raise_no_false_alarm(root, make_store):
    store = make_store()
    workers = [Catalog(root, poll_seconds=0, verifier=RegistryAnchors(make_store())) for _ in range(2)]
    for worker in workers:
        worker.refresh()
    done = threading.Event()

    def change():
        try:
            with registry_anchor.registry_changes(store):
                for i in range(15):
                    registry.set_label(root, "m", "staging", 1 + i % 2, actor="ops")
        finally:
            done.set()

    writer = threading.Thread(target=change)
    writer.start()
    while not done.is_set():
        for worker in workers:
            worker.refresh()
    writer.join(30)
    for worker in workers:
        worker.refresh()
        assert worker.model("m").registry_error is None and worker.resolve("m", label="staging").version == 1
    assert REFUSED not in actions(store)


def test_an_automatic_rollback_is_accepted_by_the_workers(root, make_store):
    store = make_store()
    with registry_anchor.registry_changes(store):
        registry.set_rollout(root, "m", canary={"version": 2, "weight": 50}, actor="ops")
    catalog = Catalog(root, poll_seconds=0, verifier=RegistryAnchors(make_store()))
    catalog.refresh()
    records = [RequestRecord(f"r{i}", time.time() - 5, "m", 2, "canary", 500, 10.0, 1, error="internal") for i in range(60)]
    store.record_requests(records)
    assert auto_rollback.enforce(store, root, "m") is not None
    catalog.refresh()
    assert catalog.model("m").registry_error is None and catalog.model("m").rollout["canary"]["weight"] == 0
    assert REFUSED not in actions(store)


def test_audit_verify_names_an_edit_to_the_history_alone(root, make_store):
    store = make_store()
    with registry_anchor.registry_changes(store):
        registry.set_label(root, "m", "staging", 1, actor="x")
    assert registry_anchor.check_registry(store, root) == []
    path = root / "m" / "registry.json"
    state = json.loads(path.read_text())
    state["history"][0]["reason"] = "rewritten"  # an entry with no audit link: only the anchor sees it
    path.write_text(json.dumps(state))
    (problem,) = registry_anchor.check_registry(store, root)
    assert problem.startswith("m: registry.json does not match the audit trail")


def test_an_older_audited_copy_put_back_is_not_served(root, make_store):
    store = make_store()
    catalog = Catalog(root, poll_seconds=0, verifier=RegistryAnchors(make_store()))
    catalog.refresh()
    old_copy = (root / "m" / registry.LAST_GOOD_FILE).read_bytes()
    with registry_anchor.registry_changes(store):  # a change the worker has not polled yet
        registry.set_label(root, "m", "production", 2, actor="ops")
    (root / "m" / "registry.json").write_text("{")
    (root / "m" / registry.LAST_GOOD_FILE).write_bytes(old_copy)  # a rollback to a state once audited
    catalog.refresh()
    assert catalog.model("m").registry_source == FROM_MEMORY  # not the copy: it is no longer the anchored state
    booted = Catalog(root, poll_seconds=0, verifier=RegistryAnchors(make_store()))
    booted.refresh()
    assert "production" not in booted.model("m").labels
