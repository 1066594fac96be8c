"""``backup`` and ``restore`` in process: a deployment's artifacts, registries and SQLite store go
into a backup folder and back onto an empty target, checked file by file and row by row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer

from service.backup import manifest, pinned, restore, take
from service.backup.pinned import sqlite_path
from service.cli import cli
from service.models import registry
from service.security import checkpoint, signing
from service.store import Store
from tests.builders import copy_version, flip_byte
from tests.conftest import SCRUBBED_ENV
from tests.sqlite import connected, query

MODEL = "breast-cancer"


def cli_env(artifacts: Path, database: str, **extra: str) -> dict[str, str | None]:
    return {**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(artifacts), "DATABASE_URL": database,
            "AUDIT_CHECKPOINT_FILE": str(artifacts.parent / "checkpoints.jsonl"), **extra}


def invoke(env: dict, *args: str):
    return CliRunner(env=env).invoke(cli, list(args))


@pytest.fixture
def served(app, client, runner):
    """A deployment with predictions, feedback, a second version and a label moved by the CLI."""
    root = app.config["SERVICE_CONFIG"].artifacts_dir
    copy_version(root, MODEL, 1, 2)
    answer = client.post(f"/v1/models/{MODEL}:predict", json={"instances": load_breast_cancer().data[:20].tolist()})
    assert answer.status_code == 200, answer.text
    ids = answer.json["ids"]
    app.extensions["observer"].flush()  # feedback finds only predictions already logged
    sent = client.post(f"/v1/models/{MODEL}/feedback", json={"feedback": [{"id": i, "label": 1} for i in ids[:5]]})
    assert sent.json["accepted"] == 5
    app.extensions["observer"].flush()
    moved = runner.invoke(cli, ["label", "set", MODEL, "staging", "2", "--reason", "try"])
    assert moved.exit_code == 0, moved.output
    return app.config["SERVICE_CONFIG"]


def counts(url: str) -> dict[str, int]:
    store = Store.from_url(url)
    try:
        return {t: store.fetch(f"SELECT count(*) FROM {t}")[0][0] for t in ("prediction_batches", "feedback", "audit")}
    finally:
        store.close()


def test_a_backup_restores_onto_an_empty_target_with_the_same_labels_rows_and_chain(served, tmp_path):
    env = cli_env(served.artifacts_dir, served.database_url)
    made = invoke(env, "backup", str(tmp_path / "backups"))
    assert made.exit_code == 0, made.output
    folder = Path(made.stdout.strip().splitlines()[-1])
    written = json.loads((folder / "manifest.json").read_text())
    assert written["models"][MODEL]["versions"] == [1, 2] and written["models"][MODEL]["labels"]["staging"] == 2
    assert written["store"]["rows"]["feedback"] == 5 and written["store"]["backend"] == "sqlite"
    assert "signature" not in written and oct(folder.stat().st_mode & 0o777) == "0o700"
    source = Store.from_url(served.database_url)  # after the snapshot: who made it, and when (for /metrics)
    assert source.fetch("SELECT action, target FROM audit ORDER BY seq DESC LIMIT 1") == \
        [("backup.create", f"backup:{folder.name}")]
    assert source.fetch("SELECT count(*) FROM maintenance WHERE job = 'backup'") == [(1,)]
    source.close()

    target = cli_env(tmp_path / "new" / "artifacts", f"sqlite:///{tmp_path / 'new' / 'db.sqlite'}")
    done = invoke(target, "restore", str(tmp_path / "backups"))  # the folder of backups: the newest is taken
    assert done.exit_code == 0, done.output
    assert registry.read_state(tmp_path / "new" / "artifacts", MODEL)["labels"] == \
        registry.read_state(served.artifacts_dir, MODEL)["labels"]
    assert counts(target["DATABASE_URL"]) == counts(served.database_url)
    for command in (["audit", "verify"], ["registry", "check"]):
        result = invoke(target, *command)
        assert result.exit_code == 0, result.output


def test_one_changed_byte_in_the_store_copy_is_refused_in_one_line_before_anything_is_written(served, tmp_path):
    made = invoke(cli_env(served.artifacts_dir, served.database_url), "backup", str(tmp_path / "b"))
    folder = Path(made.stdout.strip())
    flip_byte(folder / pinned.SQLITE_COPY, offset=4096 + 100)
    target = cli_env(tmp_path / "new", f"sqlite:///{tmp_path / 'new.sqlite'}")
    refused = invoke(target, "restore", str(folder))
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "damaged backup: store/predictions.db does not match its sha256" in refused.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.sqlite").exists()


def test_a_foreign_folder_and_a_non_empty_target_are_refused(served, tmp_path):
    env = cli_env(served.artifacts_dir, served.database_url)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "manifest.json").write_text('{"files": {}}')
    refused = invoke(cli_env(tmp_path / "a", f"sqlite:///{tmp_path / 'x.db'}"), "restore", str(tmp_path / "foreign"))
    assert refused.exit_code == 1 and "not a backup of this server" in refused.output
    folder = Path(invoke(env, "backup", str(tmp_path / "b")).stdout.strip())
    onto_itself = invoke(env, "restore", str(folder))
    assert onto_itself.exit_code == 1 and onto_itself.output.count("\n") == 1
    assert "the target is not empty" in onto_itself.output and "--force" in onto_itself.output
    (tmp_path / "checkpoints.jsonl").write_text('{"seq": 1}\n')  # another chain's
    forced = invoke(env, "restore", str(folder), "--force")
    assert forced.exit_code == 0, forced.output
    assert [p.name.split(".replaced-")[0] for p in tmp_path.glob("checkpoints.jsonl.replaced-*")] == ["checkpoints.jsonl"]
    assert invoke(env, "audit", "verify").exit_code == 0


def test_secrets_stay_out_unless_asked_and_keep_leaves_the_newest(served, tmp_path):
    store = Store.from_url(served.database_url)
    from service.store import erasure

    secret = erasure.subject_key(store).hex().encode()
    store.close()
    env = cli_env(served.artifacts_dir, served.database_url, PII_HASH_KEY="k" * 32)
    plain = Path(invoke(env, "backup", str(tmp_path / "b")).stdout.strip())
    rows = query(plain / pinned.SQLITE_COPY, "SELECT count(*) FROM store_secrets")
    assert rows == [(0,)] and not (plain / take.SECRETS).exists()
    assert secret not in (plain / pinned.SQLITE_COPY).read_bytes()  # overwritten, not just unlinked
    secret = Path(invoke(env, "backup", str(tmp_path / "b"), "--include-secrets", "--keep", "1").stdout.strip())
    assert take.backups(tmp_path / "b") == [secret]
    assert (secret / take.SECRETS / "pii-hash-key").read_text() == "k" * 32
    assert oct((secret / take.SECRETS / "pii-hash-key").stat().st_mode & 0o777) == "0o600"
    rows = query(secret / pinned.SQLITE_COPY, "SELECT count(*) FROM store_secrets")
    assert rows == [(1,)]


def test_a_signed_backup_needs_its_public_key_and_a_changed_manifest_is_refused(served, tmp_path):
    private, public, _ = signing.generate(tmp_path / "keys")
    env = cli_env(served.artifacts_dir, served.database_url, BACKUP_SIGNING_KEY_FILE=str(private))
    folder = Path(invoke(env, "backup", str(tmp_path / "b")).stdout.strip())
    assert json.loads((folder / "manifest.json").read_text())["signature"].startswith("ed25519:")
    target = cli_env(tmp_path / "new", f"sqlite:///{tmp_path / 'new.db'}")
    unknown = invoke(target, "restore", str(folder))
    assert unknown.exit_code == 1 and "BACKUP_TRUSTED_KEYS" in unknown.output
    edited = json.loads((folder / "manifest.json").read_text())
    edited["audit"]["seq"] += 1
    (folder / "manifest.json").write_text(json.dumps(edited))
    trusted = {**target, "BACKUP_TRUSTED_KEYS": str(public)}
    refused = invoke(trusted, "restore", str(folder))
    assert refused.exit_code == 1 and "signature" in refused.output and refused.output.count("\n") == 1
    unsigned = Path(invoke(cli_env(served.artifacts_dir, served.database_url), "backup", str(tmp_path / "u")).stdout.strip())
    assert "not signed" in invoke(trusted, "restore", str(unsigned)).output


def test_a_version_that_fails_verification_is_left_out_and_named(served, tmp_path):
    flip_byte(served.artifacts_dir / MODEL / "1" / "model.joblib")
    made = invoke(cli_env(served.artifacts_dir, served.database_url), "backup", str(tmp_path / "b"))
    assert made.exit_code == 0 and f"warning: {MODEL} version 1 left out" in made.stderr
    written = manifest.read(Path(made.stdout.strip()))
    assert written["models"][MODEL]["versions"] == [2] and "sha256" in written["models"][MODEL]["skipped"]["1"]


def test_checkpoints_newer_than_the_snapshot_are_not_copied(served, tmp_path):
    store = Store.from_url(served.database_url)
    key = checkpoint.Ed25519PrivateKey.generate()
    path = tmp_path / "points.jsonl"
    first = checkpoint.write(store, key, path)
    snapshot = pinned.pin(served.database_url)
    from service.security import audit

    audit.record(store, "test", "test.after", "x")
    checkpoint.write(store, key, path)
    store.close()
    snapshot.close()
    take._copy_checkpoints(path, tmp_path / "copy.jsonl", first.seq)
    assert [p.seq for p in checkpoint.read(tmp_path / "copy.jsonl")] == [first.seq]


def test_the_pinned_snapshot_holds_nothing_written_after_it(served, tmp_path):
    snapshot = pinned.pin(served.database_url)
    store = Store.from_url(served.database_url)
    with store.transaction() as db:
        db.execute("INSERT INTO feedback (id, ts, label, model) VALUES ('late-0', 1.0, '1', 'm')")
    store.close()
    try:
        pinned.copy_store(snapshot, tmp_path, include_secrets=False)
    finally:
        snapshot.close()
    with connected(tmp_path / pinned.SQLITE_COPY) as copy:
        assert copy.execute("SELECT count(*) FROM feedback").fetchone() == (snapshot.counts["feedback"],) == (5,)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert not os.path.exists(f"{tmp_path / pinned.SQLITE_COPY}-wal")


def test_restore_resolves_a_folder_of_backups_to_its_newest(tmp_path):
    for stamp in ("20260101T000000Z", "20260102T000000Z"):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "manifest.json").write_text("{}")
    (tmp_path / ".20260103T000000Z.partial").mkdir()
    assert restore.resolve(tmp_path) == tmp_path / "20260102T000000Z"


def test_backups_taken_while_labels_move_each_hold_the_registry_their_chain_anchors(served, tmp_path):
    """The registry copy and the store snapshot are taken under the registry locks: a change racing
    the backup lands wholly before or wholly after it, never half (anchor in, file out)."""
    import threading

    from service.models import registry_anchor

    root = served.artifacts_dir
    stop = threading.Event()
    moves = []

    def move_labels() -> None:
        store = Store.from_url(served.database_url)
        with registry_anchor.registry_changes(store):
            while not stop.is_set():
                version = 1 + len(moves) % 2
                registry.set_label(root, MODEL, "staging", version, actor="test", reason="race")
                moves.append(version)
        store.close()

    mover = threading.Thread(target=move_labels)
    mover.start()
    try:
        sources = take.Sources(root, served.database_url)
        taken = [take.take(tmp_path / "b", sources) for _ in range(4)]
    finally:
        stop.set()
        mover.join(timeout=30)
    assert len(moves) > 4
    for n, backup in enumerate(taken):
        target = restore.Target(tmp_path / f"t{n}", f"sqlite:///{tmp_path / f't{n}.db'}")
        restore.restore(backup.path, target)  # raises when registry.json and the chain disagree
        assert restore.check(target, backup.manifest) == []


def test_a_manifest_pointing_its_store_elsewhere_is_refused_and_dest_may_not_be_in_the_artifacts(served, tmp_path):
    env = cli_env(served.artifacts_dir, served.database_url)
    inside = invoke(env, "backup", str(served.artifacts_dir / "backups"))
    assert inside.exit_code == 1 and "must not be inside ARTIFACTS_DIR" in inside.output
    folder = Path(invoke(env, "backup", str(tmp_path / "b")).stdout.strip())
    written = json.loads((folder / "manifest.json").read_text())
    written["store"]["file"] = "../elsewhere.db"
    (folder / "manifest.json").write_text(json.dumps(written))
    refused = invoke(cli_env(tmp_path / "new", f"sqlite:///{tmp_path / 'new.db'}"), "restore", str(folder))
    assert refused.exit_code == 1 and "does not describe its store copy" in refused.output


def test_a_large_records_bytes_kept_in_blob_files_travel_inside_the_backup(served, client, app, tmp_path):
    """The copy is one self-contained file: the blob files' bytes go into its rows, so a restore needs
    nothing of the old host's disk, onto either backend."""
    from service.explain import past

    rows = load_breast_cancer().data[:155].tolist() * 6  # 930 rows, 220 KB of inputs: past the blob threshold
    answer = client.post(f"/v1/models/{MODEL}:predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    app.extensions["observer"].flush()
    source = Store.from_url(served.database_url)
    assert source.fetch("SELECT count(*) FROM prediction_batches WHERE arrays_ref IS NOT NULL") == [(1,)]
    pid = answer.json["ids"][-1]
    expected = past.find(source, MODEL, pid).inputs
    source.close()

    made = invoke(cli_env(served.artifacts_dir, served.database_url), "backup", str(tmp_path / "backups"))
    assert made.exit_code == 0, made.output
    for blob in Path(f"{sqlite_path(served.database_url)}.blobs").glob("*.blob"):
        blob.unlink()  # the old host's disk is gone
    target = cli_env(tmp_path / "new" / "artifacts", f"sqlite:///{tmp_path / 'new' / 'db.sqlite'}")
    assert invoke(target, "restore", str(tmp_path / "backups")).exit_code == 0
    restored = Store.from_url(target["DATABASE_URL"])
    try:
        assert restored.fetch("SELECT count(*) FROM prediction_batches WHERE arrays_ref IS NOT NULL") == [(0,)]
        assert past.find(restored, MODEL, pid).inputs == expected
    finally:
        restored.close()
