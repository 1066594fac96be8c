"""The hash-chained audit trail: append, verify (edit, deletion, reordering), export, registry cross-check."""

from __future__ import annotations

import io
import json
import sqlite3
import threading

import pytest

from service.models import registry, registry_anchor
from service.security import audit
from service.store import Store
from tests.builders import package


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "audit.sqlite")
    yield store
    store.close()


def fill(store, n=5):
    return [audit.record(store, f"key:k{i}", "label.set", "model:m", {"i": i, "text": "é"}, now=1000.0 + i)
            for i in range(n)]


def execute(store, sql, params=()):
    with store.transaction() as db:
        db.execute(sql, params)


def test_records_chain_each_to_the_one_before(store):
    written = fill(store, 3)
    assert [r.seq for r in written] == [1, 2, 3]
    assert written[0].prev_hash == audit.GENESIS
    assert written[1].prev_hash == written[0].hash and written[2].prev_hash == written[1].hash
    check = audit.verify(store)
    assert check.ok and check.count == 3 and check.head == written[-1].hash


def test_an_empty_trail_verifies(store):
    assert audit.verify(store).ok and audit.verify(store).count == 0


def test_a_one_byte_edit_is_named(store):
    fill(store)
    execute(store, "UPDATE audit SET details = replace(details, ': 2', ': 3') WHERE seq = 3")
    check = audit.verify(store)
    assert check.broken_seq == 3 and "edited" in check.reason and check.count == 2


def test_an_edited_actor_is_named(store):
    fill(store)
    execute(store, "UPDATE audit SET actor = 'key:k9' WHERE seq = 2")
    assert audit.verify(store).broken_seq == 2


def test_a_deleted_record_is_named(store):
    fill(store)
    execute(store, "DELETE FROM audit WHERE seq = 2")
    check = audit.verify(store)
    assert check.broken_seq == 3 and "record 2 is missing" in check.reason


def test_a_deleted_and_renumbered_record_is_named(store):
    fill(store)
    execute(store, "DELETE FROM audit WHERE seq = 2")
    execute(store, "UPDATE audit SET seq = seq - 1 WHERE seq > 2")
    check = audit.verify(store)
    assert check.broken_seq == 2 and "prev_hash" in check.reason


def test_two_swapped_records_are_named(store):
    fill(store)
    execute(store, "UPDATE audit SET seq = -1 WHERE seq = 2")
    execute(store, "UPDATE audit SET seq = 2 WHERE seq = 3")
    execute(store, "UPDATE audit SET seq = 3 WHERE seq = -1")
    assert audit.verify(store).broken_seq == 2


def test_export_writes_json_lines_oldest_first(store):
    fill(store, 3)
    out = io.StringIO()
    assert audit.export(store, out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert lines[0]["details"] == {"i": 0, "text": "é"} and lines[0]["prev_hash"] == audit.GENESIS


def test_many_records_page_through(store):
    with store.transaction() as db:  # bulk, chained like record() would
        prev = audit.GENESIS
        for seq in range(1, audit.PAGE + 6):
            digest = audit.content_hash(prev, seq, 1.0, "a", "x", "t", {})
            db.execute(store.insert_sql("audit", audit.COLUMNS), (seq, 1.0, "a", "x", "t", "{}", prev, digest))
            prev = digest
    assert audit.verify(store).count == audit.PAGE + 5


class DownStore:
    def transaction(self, lock=None):
        raise sqlite3.OperationalError("database is locked")


def test_record_quietly_never_raises(caplog):
    assert audit.record_quietly(DownStore(), "a", "x", "t") is None
    assert "audit record could not be written" in caplog.text


def test_background_writes_off_the_callers_thread_and_drops_when_full(store):
    background = audit.Background(capacity=2)
    for i in range(3):
        background.put("anonymous", "auth.denied", "/v1/models", {"i": i})
    assert background.dropped == 1  # no store yet: two wait, the third is dropped
    background.attach(store)
    assert background.join(timeout=10)
    assert [r["action"] for r in audit.records(store)] == ["auth.denied", "auth.denied"]


def test_registry_changes_carry_the_audit_hash_and_an_edit_shows(store, tmp_path):
    root = tmp_path / "artifacts"
    package(root, "m")
    package(root, "m")
    with registry_anchor.registry_changes(store):
        entry = registry.set_label(root, "m", "production", 2, actor="key:ops", reason="ship")
    assert entry["audit"] == audit.find(store, "label.set")[-1].hash
    assert registry_anchor.check_registry(store, root) == []
    # an edit by hand: the label moved back, no audited change
    state = json.loads((root / "m" / "registry.json").read_text())
    state["labels"]["production"] = 1
    (root / "m" / "registry.json").write_text(json.dumps(state))
    problems = registry_anchor.check_registry(store, root)
    assert len(problems) == 1 and "labels or rollout differ" in problems[0]


def test_a_rewritten_history_entry_shows(store, tmp_path):
    root = tmp_path / "artifacts"
    package(root, "m")
    with registry_anchor.registry_changes(store):
        registry.set_label(root, "m", "staging", 1, actor="key:ops", reason="try")
    state = json.loads((root / "m" / "registry.json").read_text())
    state["history"][-1]["actor"] = "key:someone-else"
    (root / "m" / "registry.json").write_text(json.dumps(state))
    assert "differs from audit record" in registry_anchor.check_registry(store, root)[0]
    state["history"].pop()
    (root / "m" / "registry.json").write_text(json.dumps(state))
    assert any("missing from the history" in p for p in registry_anchor.check_registry(store, root))


def test_changes_outside_the_block_are_not_audited(store, tmp_path):
    root = tmp_path / "artifacts"
    package(root, "m")
    with registry_anchor.registry_changes(store):
        pass
    assert "audit" not in registry.set_label(root, "m", "staging", 1, actor="x")
    assert audit.verify(store).count == 0


def test_the_chain_holds_on_both_backends_with_writers_racing(make_store):
    """Two stores (as two workers) append at once: one writer at a time, so the chain never forks."""
    first, second = make_store(), make_store()
    errors = []

    def append(store, who):
        try:
            for i in range(15):
                audit.record(store, who, "auth.denied", "/v1/models", {"i": i})
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(s, who)) for s, who in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    check = audit.verify(first)
    assert check.ok and check.count == 30
    with first.transaction() as db:
        db.execute("UPDATE audit SET target = '/v1/modelz' WHERE seq = 17")
    assert audit.verify(second).broken_seq == 17
