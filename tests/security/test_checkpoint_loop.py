"""The checkpoint job in a server: the elected worker anchors the chain, an admin change is
anchored at once, and /metrics shows the newest checkpoint (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from service.security import audit, checkpoint
from service.security.checkpoint_loop import CheckpointLoop
from service.security.keys import create_key


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "keys" / "checkpoint.key"
    checkpoint.generate(path)
    return path


def test_only_the_elected_worker_writes_on_its_tick(make_store, key, tmp_path):
    path = tmp_path / "checkpoints.jsonl"
    store = make_store()
    audit.record(store, "x", "key.create", "key:a")
    first = CheckpointLoop(store, key, path, 60, lock_path=tmp_path / "lock")
    second = CheckpointLoop(make_store(), key, path, 60, lock_path=tmp_path / "lock")
    try:
        assert first.run_once().seq == 1
        audit.record(store, "x", "key.create", "key:b")
        assert second.run_once() is None  # not the leader
        assert [p.seq for p in checkpoint.read(path)] == [1]
        assert first.run_once().seq == 2 and first.run_once() is None  # nothing new: no line
    finally:
        first.stop()
        second.stop()


def test_a_broken_chain_is_never_signed_and_the_loop_goes_on(make_store, key, tmp_path):
    path, store = tmp_path / "checkpoints.jsonl", make_store()
    audit.record(store, "x", "key.create", "key:a")
    with store.transaction() as db:
        db.execute("UPDATE audit SET actor = ? WHERE seq = ?", ("y", 1))
    loop = CheckpointLoop(store, key, path, 0)
    assert loop.after_change() is None and loop.failures == 1 and checkpoint.read(path) == []


def test_an_admin_change_is_anchored_at_once_and_shown_in_metrics(make_app, key, tmp_path):
    keys = tmp_path / "keys.json"
    token = create_key(keys, "ops", ["admin", "read"])
    path = tmp_path / "anchor" / "checkpoints.jsonl"
    app = make_app(api_keys_file=keys, audit_checkpoint_key_file=key, audit_checkpoint_file=path,
                   audit_checkpoint_seconds=0)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = token
    response = client.put("/v1/models/breast-cancer/labels/staging", json={"version": 1, "reason": "try"})
    assert response.status_code == 200, response.get_json()
    [point] = checkpoint.read(path)
    assert point.seq == audit.verify(app.extensions["store"]).count and point.seq >= 1
    text = client.get("/metrics").get_data(as_text=True)
    assert f"audit_checkpoint_seq {float(point.seq)}" in text
    assert "audit_checkpoint_timestamp_seconds" in text
