"""The attacks of the security review, replayed: each asserts the outcome the server now gives.

An attacker with write access to ``artifacts/``, with the store's database, with a key of the
wrong scope, or with a webhook receiver of their choosing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.config import Config
from service.errors import ArtifactError
from service.models import artifacts, registry
from service.monitoring.notify import Notifier
from service.security import audit, signing
from service.security.keys import create_key
from tests.api.test_faults import replace_model_file
from tests.builders import copy_version, fake_gunicorn_server, load_gunicorn_conf
from tests.conftest import SCRUBBED_ENV
from tests.faulty_models import MarkerOnUnpickle
from tests.monitoring.test_notify import FIRING, Redirecting
from tests.sqlite import connected

CANCER = {"instances": [[1.0] * 30]}


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.json"
    return path, {scope: create_key(path, f"only-{scope}", [scope]) for scope in ("predict", "read", "admin")}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sign_everything(root: Path, private: Path) -> None:
    """The operator's packaging step: every demo version signed with the private key."""
    keys = signing.model_keys(private_key_file=private)
    for name in artifacts.list_models(root):
        for version in artifacts.list_versions(root, name):
            folder = artifacts.version_dir(root, name, version)
            manifest = artifacts.read_manifest(folder)
            manifest["signature"] = artifacts.sign_manifest(manifest, keys)
            os.chmod(folder / artifacts.MANIFEST, 0o644)
            artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest, mode=0o444)


def cli_runner(app) -> CliRunner:
    config = app.config["SERVICE_CONFIG"]
    return CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(config.artifacts_dir),
                          "DATABASE_URL": config.database_url})


def database(app) -> Path:
    return Path(app.config["SERVICE_CONFIG"].database_url.removeprefix("sqlite:///"))


# -- 1. a planted version with a malicious pickle and a self-recomputed manifest --------------------------


def test_planted_version_is_refused_unpickled_never_and_audited(artifact_root, tmp_path, make_app):
    private, public, _ = signing.generate(tmp_path / "signing")
    sign_everything(artifact_root, private)
    marker = tmp_path / "unpickled.marker"
    folder = copy_version(artifact_root, "breast-cancer", 1, 7)
    replace_model_file(folder, MarkerOnUnpickle(marker))  # every hash recomputed by the attacker
    for forged in ("drop the signature", "keep the old one"):
        manifest = artifacts.read_manifest(folder)
        if forged == "drop the signature":
            manifest.pop("signature", None)
        os.chmod(folder / artifacts.MANIFEST, 0o644)
        artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
        registry.set_label(artifact_root, "breast-cancer", "production", 1, actor="x")  # labelled or not
        app = make_app(trusted_keys=(str(public),))
        client = app.test_client()
        status = client.get("/v1/models/breast-cancer/versions/7").get_json()
        assert status["status"] == "FAILED"
        assert "requires a signature" in status["reason"] or "signature does not match" in status["reason"]
        assert not marker.exists(), "the planted pickle was unpickled"
        assert client.post("/v1/models/breast-cancer:predict", json=CANCER).status_code == 200
        assert app.extensions["audit"].join(10)
        refused = [r for r in audit.find(app.extensions["store"], "artifact.refused")]
        assert [(r.target, r.details["version"]) for r in refused] == [("model:breast-cancer", 7)]


def test_a_label_cannot_point_at_the_planted_version(artifact_root, tmp_path):
    private, public, _ = signing.generate(tmp_path / "signing")
    sign_everything(artifact_root, private)
    folder = copy_version(artifact_root, "diabetes", 1, 9)  # renumbered: the signature no longer matches
    with pytest.raises(ArtifactError, match="signature does not match"):
        registry.set_label(artifact_root, "diabetes", "production", 9, actor="x",
                           signing_key=signing.model_keys(trusted=[public]))
    assert folder.is_dir()


def unsigned_check(monkeypatch, host: str, **env: str):
    """Run gunicorn.conf.py's start-up check against one fake listener on ``host``; return (exited, log)."""
    conf = load_gunicorn_conf(monkeypatch, **env)
    server, lines = fake_gunicorn_server(host)
    exits = []

    class Exit(Exception):
        pass

    def fake_exit(code):
        exits.append(code)
        raise Exit

    monkeypatch.setattr(conf.os, "_exit", fake_exit)
    try:
        conf._check_unsigned_models(server)
    except Exit:
        pass
    return exits, lines


def test_a_public_listener_without_signature_checks_is_refused_unless_told(monkeypatch, tmp_path):
    assert unsigned_check(monkeypatch, "10.1.2.3")[0] == [2]
    exits, lines = unsigned_check(monkeypatch, "10.1.2.3", ALLOW_UNSIGNED_MODELS="1")
    assert exits == [] and lines[0][0] == "warning" and "without signature verification" in lines[0][1]
    _, public, _ = signing.generate(tmp_path / "k")
    assert unsigned_check(monkeypatch, "10.1.2.3", MODEL_TRUSTED_KEYS=str(public)) == ([], [])
    assert unsigned_check(monkeypatch, "127.0.0.1") == ([], [])


# -- 2. registry.json edited by hand ----------------------------------------------------------------------


def test_an_edited_registry_json_is_detected(make_app, keys_file):
    path, key = keys_file
    app = make_app(api_keys_file=path)
    client = app.test_client()
    moved = client.put("/v1/models/diabetes/labels/staging", json={"version": 1, "reason": "try"},
                       headers=bearer(key["admin"]))
    assert moved.status_code == 200 and moved.get_json()["change"]["audit"]
    runner = cli_runner(app)
    assert runner.invoke(cli, ["audit", "verify"]).exit_code == 0
    root = app.config["SERVICE_CONFIG"].artifacts_dir
    state = json.loads((root / "diabetes" / "registry.json").read_text())
    state["labels"]["staging"] = 2  # the attacker moves a label without an admin call
    (root / "diabetes" / "registry.json").write_text(json.dumps(state))
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "diabetes: labels or rollout differ from those audit record" in result.output


# -- 3. the audit table edited, a record deleted, two swapped ---------------------------------------------


@pytest.fixture
def audited(make_app, keys_file):
    """An app whose audit table holds admin changes and refused requests."""
    path, key = keys_file
    app = make_app(api_keys_file=path)
    client = app.test_client()
    for label in ("a", "b", "c"):
        assert client.put(f"/v1/models/diabetes/labels/{label}", json={"version": 1},
                          headers=bearer(key["admin"])).status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert app.extensions["audit"].join(10)
    return app


def tamper(app, *statements: str) -> None:
    with connected(database(app)) as db:
        for statement in statements:
            db.execute(statement)


@pytest.mark.parametrize("attack, statements, broken", [
    # records 1 and 2 anchor the two models' registry.json at boot; 3 to 5 are the label changes
    ("one byte edited", ["UPDATE audit SET actor = 'key:only-admiN' WHERE seq = 4"], 4),
    ("a record deleted", ["DELETE FROM audit WHERE seq = 4"], 5),
    ("two records swapped", ["UPDATE audit SET seq = -1 WHERE seq = 4", "UPDATE audit SET seq = 4 WHERE seq = 5",
                             "UPDATE audit SET seq = 5 WHERE seq = -1"], 4),
])
def test_a_rewritten_audit_table_is_detected(audited, attack, statements, broken):
    runner = cli_runner(audited)
    intact = runner.invoke(cli, ["audit", "verify"])
    assert intact.exit_code == 0 and "audit chain intact: 6 record(s)" in intact.output
    tamper(audited, *statements)
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1, attack
    assert f"audit chain broken at record {broken}:" in result.output


def test_export_hands_the_auditor_json_lines(audited, tmp_path):
    out = tmp_path / "audit.jsonl"
    result = cli_runner(audited).invoke(cli, ["audit", "export", "--out", str(out)])
    assert result.exit_code == 0 and "exported 6 audit record(s)" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["action"] for r in lines[:2]] == ["registry.anchored"] * 2  # the boot's anchors
    assert [(r["actor"], r["action"]) for r in lines[2:]] == [("key:only-admin", "label.set")] * 3 + [
        ("anonymous", "auth.denied")]
    assert lines[5]["details"]["status"] == 401 and lines[5]["target"] == "/v1/models"


def test_a_wrong_scope_is_recorded_with_the_key_id(make_app, keys_file):
    path, key = keys_file
    app = make_app(api_keys_file=path)
    assert app.test_client().put("/v1/models/diabetes/labels/x", json={"version": 1},
                                 headers=bearer(key["read"])).status_code == 403
    assert app.extensions["audit"].join(10)
    (denied,) = audit.find(app.extensions["store"], "auth.denied")
    assert denied.actor == "key:only-read" and denied.details["status"] == 403


def test_key_changes_are_recorded(tmp_path):
    env = {**{name: None for name in SCRUBBED_ENV}, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    runner = CliRunner(env=env)
    keys = tmp_path / "keys.json"
    assert runner.invoke(cli, ["keys", "create", "--name", "ci", "--scopes", "read", "--file", str(keys)]).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", "ci", "--file", str(keys)]).exit_code == 0
    from service.store import Store

    store = Store(tmp_path / "db.sqlite")
    assert [(r.action, r.target) for r in audit.find(store, "key.")] == [("key.create", "key:ci"),
                                                                         ("key.revoke", "key:ci")]
    store.close()


# -- 5. the smaller ones ----------------------------------------------------------------------------------


def test_gc_does_not_follow_a_planted_link(artifact_root, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    os.chmod(victim, 0o400)
    copy_version(artifact_root, "diabetes", 1, 2)
    copy_version(artifact_root, "diabetes", 1, 3)
    os.chmod(artifact_root / "diabetes" / "2", 0o755)
    (artifact_root / "diabetes" / "2" / "link").symlink_to(victim)
    (artifact_root / "diabetes" / ".gc-2-left").symlink_to(tmp_path)
    assert registry.gc(artifact_root, "diabetes", keep=1, actor="x") == [2]
    assert oct(victim.stat().st_mode & 0o777) == oct(0o400) and victim.read_text() == "x"


def test_webhook_redirect_is_not_followed():
    receiver = Redirecting()
    try:
        notifier = Notifier(receiver.url, attempts=2, base_delay=0.01)
        notifier.send(FIRING)
        assert notifier.flush(10)
        assert receiver.gets == [] and notifier.stats()["sent"] == 0
    finally:
        receiver.close()


def test_control_characters_in_a_reason_cannot_forge_history_lines(make_app, keys_file):
    path, key = keys_file
    app = make_app(api_keys_file=path)
    forged = "ok\n2026-01-01T00:00:00Z  key:boss  label.set  version=1\x1b[2K\x1b[31m"
    assert app.test_client().put("/v1/models/diabetes/labels/staging", json={"version": 1, "reason": forged},
                                 headers=bearer(key["admin"])).status_code == 200
    result = cli_runner(app).invoke(cli, ["history", "diabetes"])
    assert result.exit_code == 0 and "\x1b" not in result.output
    history = registry.read_state(app.config["SERVICE_CONFIG"].artifacts_dir, "diabetes")["history"]
    assert len(result.output.splitlines()) == len(history)  # no forged line
    last = result.output.splitlines()[-1]
    assert last.endswith("ok\\n2026-01-01T00:00:00Z  key:boss  label.set  version=1\\x1b[2K\\x1b[31m")


@pytest.mark.parametrize(("require", "status"), [(None, 401), (True, 401), (False, 200)],
                         ids=["default", "METRICS_REQUIRE_KEY=1", "METRICS_REQUIRE_KEY=0"])
def test_metrics_need_a_read_key_once_keys_are_configured_unless_opened_on_purpose(make_app, keys_file, require, status):
    path, key = keys_file
    client = make_app(api_keys_file=path, metrics_require_key=require).test_client()
    assert client.get("/metrics").status_code == status
    assert client.get("/metrics", headers=bearer(key["predict"])).status_code == (403 if status == 401 else 200)
    for headers in (bearer(key["read"]), {"X-API-Key": key["read"]}):  # what deploy/prometheus sends
        scraped = client.get("/metrics", headers=headers)
        assert scraped.status_code == 200 and "sklearn_server_http_requests_total" in scraped.get_data(as_text=True)


def test_metrics_name_features_only_when_asked(make_app):
    from service.monitoring import metrics

    for named in (False, True):
        app = make_app(metrics_feature_labels=named)
        metrics.current().set_gauge("drift_score", 0.3, model="diabetes", version=1, feature="bmi", statistic="psi")
        body = app.test_client().get("/metrics").get_data(as_text=True)
        series = [line for line in body.splitlines() if line.startswith("sklearn_server_drift_score{")]
        assert any('feature="bmi"' in line for line in series) is named
        if not named:
            position = [f["name"] for f in artifacts.read_manifest(
                app.config["SERVICE_CONFIG"].artifacts_dir / "diabetes" / "1")["input"]["features"]].index("bmi")
            assert any(f'feature="feature_{position}"' in line for line in series)


def test_config_defaults_tie_metrics_to_the_keys_and_leave_features_unnamed():
    config = Config.from_env({"METRICS_FEATURE_LABELS": "1"})
    assert Config().metrics_require_key is None and Config().metrics_feature_labels is False
    assert config.metrics_feature_labels is True
    assert Config().metrics_key_required is False
    assert Config.from_env({"API_KEYS_FILE": "keys.json"}).metrics_key_required is True
    assert Config.from_env({"API_KEYS_FILE": "keys.json", "METRICS_REQUIRE_KEY": "0"}).metrics_key_required is False
    assert Config.from_env({"METRICS_REQUIRE_KEY": "1"}).metrics_key_required is True
    assert Config.from_env({"API_KEYS_FILE": "keys.json", "METRICS_REQUIRE_KEY": ""}).metrics_key_required is True
