"""Artifacts packaged with one store (a build host) and served with another: every check gives the
same verdict before adoption (refused: not adopted), and after ``registry adopt`` (ok), on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.models import registry, registry_adopt, registry_anchor
from service.models.registry_adopt import ADOPT, RegistryNotAdopted
from service.models.registry_anchor import RegistryAnchors
from service.security import audit
from service.serving.catalog import Catalog
from tests.builders import package
from tests.conftest import SCRUBBED_ENV

NOT_ADOPTED = "not adopted: registry.json names 2 audit record(s) of another store (artifacts packaged elsewhere)"


def url_of(store):
    return f"sqlite:///{store.path}" if store.path is not None else store.dialect.url


@pytest.fixture
def moved(tmp_path, make_store):
    """Two versions packaged on a build host with store A, the artifacts copied to a server with store B."""
    build = tmp_path / "build" / "artifacts"
    with registry_anchor.registry_changes(make_store("a")):
        package(build, "m", record=True)
        package(build, "m", record=True)
    served = tmp_path / "server" / "artifacts"
    shutil.copytree(build, served)
    store = make_store("b")
    runner = CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(served),
                            "DATABASE_URL": url_of(store)})
    return served, store, runner


def verdicts(root, store, runner):
    """What the four checks say: registry check, registry accept, audit verify, a worker's catalog."""
    check = runner.invoke(cli, ["registry", "check", "m"])
    accept = runner.invoke(cli, ["registry", "accept", "m", "--reason", "edited"])
    verify = runner.invoke(cli, ["audit", "verify"])
    catalog = Catalog(root, None, 0, verifier=RegistryAnchors(store))
    catalog.refresh()
    [state] = catalog.models()
    return check, accept, verify, state


def test_before_adoption_every_check_refuses_in_the_same_words(moved):
    root, store, runner = moved
    check, accept, verify, state = verdicts(root, store, runner)
    assert check.exit_code == 1 and f"m: refused: {NOT_ADOPTED}" in check.output
    assert "registry adopt m" in check.output
    assert accept.exit_code == 1 and NOT_ADOPTED in accept.output and "registry adopt m" in accept.output
    assert verify.exit_code == 1 and f"registry: m: refused: {NOT_ADOPTED}" in verify.output
    assert "names an audit record not in the chain" not in verify.output  # one line per model, not per entry
    assert state.registry_error == NOT_ADOPTED and dict(state.labels) == {}
    # nothing anchored the foreign file as it is, and the refusal was recorded once
    assert registry_anchor.anchor_of(store, registry_anchor.root_id(root), "m") is None
    assert [r.details["refused"]["reason"] for r in audit.find(store, "registry.refused")] == [NOT_ADOPTED]


def test_after_adoption_every_check_says_ok(moved):
    root, store, runner = moved
    result = runner.invoke(cli, ["registry", "adopt", "m", "--reason", "from CI"])
    assert result.exit_code == 0, result.output
    assert "m: adopted 2 history entries" in result.output and "sha256 only (no trusted keys configured)" in result.output
    check, accept, verify, state = verdicts(root, store, runner)
    assert check.exit_code == 0 and "m: ok" in check.output
    assert accept.exit_code == 1 and "matches the audit trail; there is nothing to accept" in accept.output
    assert verify.exit_code == 0, verify.output
    assert state.registry_error is None and dict(state.labels) == {"production": 1}


def test_the_adoption_record_says_who_from_where_and_what(moved):
    root, store, runner = moved
    history = registry.read_state(root, "m")["history"]
    assert runner.invoke(cli, ["registry", "adopt", "--all", "--reason", "from CI"]).exit_code == 0
    [record] = audit.find(store, ADOPT)
    entry = record.details["entry"]
    assert record.actor.startswith("cli:") and entry["reason"] == "from CI"
    assert entry["from"]["root"] == str(root.resolve()) and entry["from"]["host"]
    assert entry["head"] == history[-1]["audit"]
    assert [a["audit"] for a in entry["adopted"]] == [e["audit"] for e in history]
    assert [v["version"] for v in entry["versions"]] == [1, 2]
    assert registry_adopt.adopted(store, "m") == {a["audit"]: a["sha256"] for a in entry["adopted"]}


def test_an_adopted_entry_edited_afterwards_is_caught(moved):
    root, store, runner = moved
    assert runner.invoke(cli, ["registry", "adopt", "m"]).exit_code == 0
    path = root / "m" / "registry.json"
    state = json.loads(path.read_text())
    state["history"][0]["actor"] = "someone-else"
    path.write_text(json.dumps(state))
    verify = runner.invoke(cli, ["audit", "verify"])
    assert verify.exit_code == 1 and "history entry 0 (version.packaged) differs from the entry adopted" in verify.output
    assert runner.invoke(cli, ["registry", "check", "m"]).exit_code == 1


def test_a_tampered_artifact_is_not_adopted(moved):
    root, store, runner = moved
    with open(root / "m" / "2" / "model.joblib", "ab") as fh:
        fh.write(b"x")
    result = runner.invoke(cli, ["registry", "adopt", "m"])
    assert result.exit_code == 1 and "model.joblib" in result.output
    assert audit.find(store, ADOPT) == []


def test_adopting_a_file_of_this_store_is_refused(tmp_path, make_store):
    root, store = tmp_path / "artifacts", make_store()
    with registry_anchor.registry_changes(store):
        package(root, "m", record=True)
        with pytest.raises(ValueError, match="nothing to adopt"):
            registry_adopt.adopt(root, "m", actor="x")


def test_a_worker_refuses_a_foreign_file_and_serves_it_once_adopted(moved):
    root, store, _ = moved
    anchors = RegistryAnchors(store)
    with pytest.raises(RegistryNotAdopted, match="not adopted"):
        registry.read_state(root, "m", anchors)
    with registry_anchor.registry_changes(store):
        registry_adopt.adopt(root, "m", actor="x")
    assert registry.read_state(root, "m", anchors)["labels"] == {"production": 1}


def test_a_change_after_adoption_verifies(moved):
    root, store, runner = moved
    assert runner.invoke(cli, ["registry", "adopt", "m"]).exit_code == 0
    assert runner.invoke(cli, ["label", "set", "m", "production", "2"]).exit_code == 0
    assert runner.invoke(cli, ["audit", "verify"]).exit_code == 0
    assert "m: ok" in runner.invoke(cli, ["registry", "check"]).output


def test_adopt_needs_a_name_or_all(moved):
    _, _, runner = moved
    result = runner.invoke(cli, ["registry", "adopt"])
    assert result.exit_code == 2 and "give a model NAME or --all" in result.output
