"""registry.json checked against its audit anchor: what a worker serves, what a change, a restore
and an accept do when the file was edited outside the server's tools."""

from __future__ import annotations

import json
import threading

import pytest

from service.models import registry, registry_anchor
from service.models.registry_anchor import REFUSED, RegistryAnchors
from service.models.registry_file import UNVERIFIED, RegistryUnverified
from service.security import audit
from service.store import Store
from tests.builders import copy_version, package


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "audit.sqlite")
    yield store
    store.close()


@pytest.fixture
def root(tmp_path, store):
    root = tmp_path / "artifacts"
    package(root, "m", record=True)
    copy_version(root, "m", 1, 2)
    with registry_anchor.registry_changes(store):
        registry.set_label(root, "m", "staging", 2, actor="ops")
    return root


def edit(root, **labels):
    path = root / "m" / "registry.json"
    state = json.loads(path.read_text())
    state["labels"].update(labels)
    path.write_text(json.dumps(state, indent=2))


def test_an_edited_file_is_served_from_the_audited_last_good_copy(root, store):
    edit(root, production=2)
    reading = registry.read_checked_state(root, "m", RegistryAnchors(store))
    assert reading.from_last_good and reading.code == UNVERIFIED
    assert reading.state["labels"] == {"production": 1, "staging": 2}
    assert "does not match the audit trail" in reading.error and str(root) not in reading.error
    copy = json.loads((root / "m" / registry.LAST_GOOD_FILE).read_text())
    assert copy["labels"]["production"] == 1  # never refreshed from a file that failed the check


def test_an_edited_copy_is_not_served_either(root, store):
    edit(root, production=2)
    copy = root / "m" / registry.LAST_GOOD_FILE
    state = json.loads(copy.read_text())
    state["labels"]["production"] = 2
    copy.write_text(json.dumps(state))
    with pytest.raises(RegistryUnverified):
        registry.read_checked_state(root, "m", RegistryAnchors(store))


def test_a_deleted_file_is_refused_when_it_was_anchored(root, store):
    (root / "m" / "registry.json").unlink()
    (root / "m" / registry.LAST_GOOD_FILE).unlink()
    with pytest.raises(RegistryUnverified) as caught:  # not "no state": that would drop every label
        registry.read_checked_state(root, "m", RegistryAnchors(store))
    assert caught.value.code == UNVERIFIED


def test_restore_puts_back_the_audited_state_and_anchors_it(root, store):
    edit(root, production=2)
    with registry_anchor.registry_changes(store):
        entry = registry.restore(root, "m", actor="ops", reason="not ours")
    assert entry["kept"].startswith(".registry.broken-")
    reading = registry.read_checked_state(root, "m", RegistryAnchors(store))
    assert reading.error is None and reading.state["labels"] == {"production": 1, "staging": 2}
    assert registry_anchor.check_registry(store, root) == []
    with registry_anchor.registry_changes(store), pytest.raises(ValueError, match="nothing to restore"):
        registry.restore(root, "m", actor="ops")


def test_accept_records_a_deliberate_edit(root, store):
    edit(root, production=2)
    with registry_anchor.registry_changes(store), pytest.raises(ValueError, match="reason"):
        registry.accept(root, "m", actor="ops", reason=" ")
    with registry_anchor.registry_changes(store):
        entry = registry.accept(root, "m", actor="ops", reason="hotfix by hand")
    assert entry["action"] == "registry.accept" and entry["labels"]["production"] == 2
    reading = registry.read_checked_state(root, "m", RegistryAnchors(store))
    assert reading.error is None and reading.state["labels"]["production"] == 2
    assert registry_anchor.check_registry(store, root) == [] and audit.verify(store).ok
    with registry_anchor.registry_changes(store), pytest.raises(ValueError, match="nothing to accept"):
        registry.accept(root, "m", actor="ops", reason="again")
    with registry_anchor.registry_changes(store):  # and changes work again
        registry.set_label(root, "m", "staging", 1, actor="ops")


def test_accept_needs_the_audit_trail(root):
    edit(root, production=2)
    with pytest.raises(ValueError, match="audit trail"):
        registry.accept(root, "m", actor="ops", reason="hotfix")


class Watching(RegistryAnchors):
    """Says when a reader has seen a mismatch it has not confirmed yet."""

    def __init__(self, store):
        super().__init__(store)
        self.mismatch_seen = threading.Event()

    def verify(self, root, name, digest, **kwargs):
        try:
            return super().verify(root, name, digest, **kwargs)
        except RegistryUnverified:
            if not kwargs.get("final"):
                self.mismatch_seen.set()
            raise


def test_a_reader_between_a_changes_anchor_and_its_rename_sees_no_tampering(root, store):
    """The writer records the anchor, then renames the file: a reader in between waits for the lock."""
    reader = Watching(store)
    reader_done = threading.Event()
    outcome = {}

    def read():
        outcome["reading"] = registry.read_checked_state(root, "m", reader)
        reader_done.set()

    def slow_hook(name, entry, state, **kwargs):
        digest = registry_anchor.registry_hook(store)(name, entry, state, **kwargs)
        thread = threading.Thread(target=read)  # the anchor is in, the file not yet renamed
        thread.start()
        assert reader.mismatch_seen.wait(10), "the reader never saw the new anchor with the old file"
        assert not reader_done.is_set()  # it waits for the lock this change holds
        outcome["thread"] = thread
        return digest

    token, check = registry.AUDIT.set(slow_hook), registry.VERIFY.set(RegistryAnchors(store))
    try:
        registry.set_label(root, "m", "staging", 1, actor="ops")
    finally:
        registry.VERIFY.reset(check)
        registry.AUDIT.reset(token)
    outcome["thread"].join(10)
    reading = outcome["reading"]
    assert reading.error is None and reading.state["labels"]["staging"] == 1
    assert not audit.find(store, REFUSED)
    assert reading.state == registry.read_state(root, "m")
