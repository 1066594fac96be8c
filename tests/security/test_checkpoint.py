"""Signed checkpoints of the audit chain's head, kept outside the database: a chain rewritten
with recomputed hashes no longer verifies (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.models import registry_anchor
from service.security import audit, checkpoint, signing
from tests.builders import package
from tests.conftest import SCRUBBED_ENV
from tests.security.test_registry_adopt import url_of


@pytest.fixture
def setup(tmp_path, make_store):
    root, store = tmp_path / "artifacts", make_store()
    with registry_anchor.registry_changes(store):
        package(root, "m", record=True)
        package(root, "m", record=True)
    runner = CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(root),
                            "DATABASE_URL": url_of(store),
                            "AUDIT_CHECKPOINT_KEY_FILE": str(tmp_path / "keys" / "checkpoint.key"),
                            "AUDIT_CHECKPOINT_FILE": str(tmp_path / "anchor" / "checkpoints.jsonl")})
    assert runner.invoke(cli, ["audit", "checkpoint-keygen", "--out", str(tmp_path / "keys" / "checkpoint.key")]
                         ).exit_code == 0
    return root, store, runner, tmp_path / "anchor" / "checkpoints.jsonl"


def rewrite_without(store, seq):
    """What an attacker with the database does: delete record ``seq``, renumber and rehash every later one."""
    rows = list(audit.records(store))
    prev, kept = audit.GENESIS, []
    for row in (r for r in rows if int(r["seq"]) != seq):
        number, details = len(kept) + 1, json.loads(row["details"])
        digest = audit.content_hash(prev, number, float(row["ts"]), row["actor"], row["action"], row["target"], details)
        kept.append((number, row["ts"], row["actor"], row["action"], row["target"], row["details"], prev, digest))
        prev = digest
    with store.transaction(lock=audit.LOCK) as db:
        db.execute("DELETE FROM audit")
        db.executemany(store.insert_sql("audit", audit.COLUMNS), kept)


def test_verify_says_how_much_a_checkpoint_covers(setup):
    _, store, runner, path = setup
    result = runner.invoke(cli, ["audit", "checkpoint"])
    assert result.exit_code == 0 and "checkpoint of records 1\u20132" in result.output
    assert runner.invoke(cli, ["audit", "checkpoint"]).output.startswith("the newest checkpoint already covers")
    audit.record(store, "x", "key.create", "key:k")
    verify = runner.invoke(cli, ["audit", "verify"])
    assert verify.exit_code == 0, verify.output
    [point] = checkpoint.read(path)
    assert f"records 1\u20132 anchored by a checkpoint of {point.when}; 1 newer record(s) not yet anchored" in verify.output


def test_a_record_deleted_after_the_last_label_change_is_caught_by_the_checkpoint(setup):
    _, store, runner, path = setup
    audit.record(store, "x", "auth.denied", "key:a")  # after the last label change
    audit.record(store, "x", "auth.denied", "key:b")
    assert runner.invoke(cli, ["audit", "checkpoint"]).exit_code == 0
    audit.record(store, "x", "auth.denied", "key:c")
    rewrite_without(store, 3)
    assert audit.verify(store).ok  # the chain alone cannot tell
    verify = runner.invoke(cli, ["audit", "verify"])
    [point] = checkpoint.read(path)
    assert verify.exit_code == 1
    assert f"Error: the audit chain contradicts the checkpoint of {point.when}: record 4 has hash" in verify.output
    refused = runner.invoke(cli, ["audit", "checkpoint"])  # nor is the rewritten head signed
    assert refused.exit_code == 1 and f"contradicts the checkpoint of {point.when} (record 4)" in refused.output


def test_a_truncated_chain_is_caught(setup):
    _, store, runner, _ = setup
    audit.record(store, "x", "auth.denied", "key:a")
    assert runner.invoke(cli, ["audit", "checkpoint"]).exit_code == 0
    rewrite_without(store, 3)
    verify = runner.invoke(cli, ["audit", "verify"])
    assert verify.exit_code == 1 and "the audit chain ends at record 2, but the checkpoint of" in verify.output


def test_a_forged_checkpoint_is_refused(setup, tmp_path):
    _, store, runner, path = setup
    assert runner.invoke(cli, ["audit", "checkpoint"]).exit_code == 0
    audit.record(store, "x", "auth.denied", "key:a")
    other = tmp_path / "other.key"
    checkpoint.generate(other)
    checkpoint.write(store, signing.load_private_key(other), path)  # someone else's key
    verify = runner.invoke(cli, ["audit", "verify"])
    assert verify.exit_code == 1 and "(record 3) has a bad signature" in verify.output


def test_without_checkpoints_verify_says_nothing_is_anchored(setup):
    _, _, runner, _ = setup
    verify = runner.invoke(cli, ["audit", "verify"])
    assert verify.exit_code == 0 and "no checkpoint: none of the 2 record(s) is anchored outside the database" in (
        verify.output)


def test_checkpoint_needs_a_key(setup):
    _, _, runner, _ = setup
    result = runner.invoke(cli, ["audit", "checkpoint"], env={"AUDIT_CHECKPOINT_KEY_FILE": None})
    assert result.exit_code == 1 and "no checkpoint key: set AUDIT_CHECKPOINT_KEY_FILE" in result.output


def test_keygen_never_overwrites(setup, tmp_path):
    _, _, runner, _ = setup
    result = runner.invoke(cli, ["audit", "checkpoint-keygen", "--out", str(tmp_path / "keys" / "checkpoint.key")])
    assert result.exit_code == 1 and "exists; it is never overwritten" in result.output
