"""A whole run in process over a copy of the demo models and a real SQLite log; the command line's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from service.cli import cli
from service.models import artifacts, registry
from service.monitoring.predlog import PredictionLog
from service.retrain.run import Request, Rollout, Services, parse_duration, parse_share, retrain
from service.security import audit
from service.store import Store
from tests.conftest import SCRUBBED_ENV

NAME = "breast-cancer"
NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "log.sqlite")
    yield store
    store.close()


@pytest.fixture
def base(tmp_path):
    data = load_breast_cancer(as_frame=True)
    X_train, _, y_train, _ = train_test_split(data.data, data.target, test_size=0.25, random_state=42,
                                              stratify=data.target)
    path = tmp_path / "base.csv"
    X_train.assign(target=y_train).to_csv(path, index=False)
    return path


def log_shifted_traffic(store: Store, root, scale: float, flip_older: bool = False) -> None:
    """Every row once, size measurements scaled, 50 rows a batch a minute apart, each labelled."""
    data = load_breast_cancer(as_frame=True)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(data.data))
    X = data.data.iloc[order].reset_index(drop=True) * rng.normal(1, 0.01, data.data.shape).clip(0.97, 1.03)
    sizes = [c for c in X.columns if any(w in c for w in ("radius", "perimeter", "area"))]
    X[sizes] *= scale
    y = data.target.iloc[order].to_numpy()
    if flip_older:
        y = np.where(np.arange(len(y)) < 455, 1 - y, y)
    features = artifacts.read_manifest(artifacts.version_dir(root, NAME, 1))["input"]["features"]
    plog = PredictionLog(store)
    for k, start in enumerate(range(0, len(X), 50)):
        part = X.iloc[start:start + 50]
        ids = [f"{k:04x}beef-{i}" for i in range(len(part))]
        columns = {c: part[c].to_numpy() for c in X.columns}
        assert plog.record(NAME, 1, None, ids, columns, np.zeros(len(part), dtype=int), None, 1.0, features,
                           now=NOW - 3600 + 60 * k)
        plog.record_feedback(NAME, [{"id": i, "label": int(v)} for i, v in zip(ids, y[start:start + 50], strict=True)])


def services(root, store) -> Services:
    return Services(root, store, None, "cli:tester")


def test_a_losing_challenger_kept_with_keep_failed_is_packaged_but_never_rolled_out(artifact_root, store, base):
    log_shifted_traffic(store, artifact_root, 1.0, flip_older=True)
    report = retrain(Request(NAME, base, "target", 2 * 3600, keep_failed=True, then=Rollout.parse("canary:10"),
                             bootstrap=200), services(artifact_root, store), now=NOW)
    assert report["packaged"] and report["challenger"] == 2 and report["rollout"] is None
    assert report["comparison"]["decided_by"] == "gain" and not report["comparison"]["passed"]
    manifest = artifacts.read_manifest(artifacts.version_dir(artifact_root, NAME, 2))
    assert manifest["retrain"]["kept_failed"] and manifest["parent_version"] == 1
    assert "failed, kept with --keep-failed" in manifest["changelog"]
    state = registry.read_state(artifact_root, NAME)
    assert state["rollout"]["canary"] is None and state["labels"]["production"] == 1
    actions = [(r.actor, r.action) for r in audit.find(store, "model.retrain")]
    assert actions == [("cli:tester", "model.retrain.started"), ("cli:tester", "model.retrain.finished")]


def test_a_winner_starts_as_a_canary_under_the_rollout_rules_in_force(artifact_root, store, base):
    registry.set_rollout(artifact_root, NAME, rules={"min_live_accuracy": 0.8}, actor="t", reason="guard")
    log_shifted_traffic(store, artifact_root, 1.5)
    report = retrain(Request(NAME, base, "target", 2 * 3600, min_gain=0.02, then=Rollout.parse("canary:10"),
                             bootstrap=200), services(artifact_root, store), now=NOW)
    assert report["comparison"]["passed"] and report["rollout"]["kind"] == "canary"
    state = registry.read_state(artifact_root, NAME)
    assert state["rollout"]["canary"] == {"version": 2, "weight": 10.0}
    assert state["rollout"]["rules"]["min_live_accuracy"] == 0.8 == report["rollout"]["rules"]["min_live_accuracy"]
    rows = report["rows"]
    assert rows["production"]["learned_from"] + rows["production"]["holdout"] == 569
    assert rows["fitted_on"] == 426 + rows["production"]["learned_from"]
    assert report["window"]["since"] == NOW - 7200


def test_a_window_without_labelled_rows_gives_a_verdict_of_the_data_gate(artifact_root, store, base):
    report = retrain(Request(NAME, base, "target", 3600), services(artifact_root, store), now=NOW)
    assert not report["packaged"] and report["comparison"]["decided_by"] == "data"


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("45m", 2700), ("90s", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30", "d", "-1d", "0h", "1w"])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="--since"):
        parse_duration(bad)


def test_shares_and_rollouts():
    assert parse_share("20%") == pytest.approx(0.2) and parse_share("0.3") == pytest.approx(0.3)
    for bad in ("0%", "100%", "x"):
        with pytest.raises(ValueError, match="--holdout-last"):
            parse_share(bad)
    assert Rollout.parse("canary:5") == Rollout("canary", 5.0) and Rollout.parse("shadow") == Rollout("shadow")
    for bad in ("canary", "canary:0", "canary:101", "shadow:3", "promote"):
        with pytest.raises(ValueError, match="--then"):
            Rollout.parse(bad)


@pytest.fixture
def run_cli(artifact_root, tmp_path):
    runner = CliRunner(env={**{name: None for name in SCRUBBED_ENV}, "ARTIFACTS_DIR": str(artifact_root),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite'}"})
    return lambda *args: runner.invoke(cli, ["retrain", *args])


def test_the_command_line_refuses_in_one_line(run_cli, base):
    unknown = run_cli("nope", "--train", str(base))
    assert unknown.exit_code == 1 and unknown.output.strip() == "Error: model 'nope' not found under " + \
        unknown.output.strip().split(" under ")[1]
    for args, word in ((["--since", "soon"], "--since"), (["--then", "promote"], "--then"),
                       (["--holdout-last", "0%"], "--holdout-last")):
        result = run_cli(NAME, "--train", str(base), *args)
        assert result.exit_code == 2 and word in result.output
    missing = run_cli(NAME, "--train", str(base), "--target", "label")
    assert missing.exit_code == 1 and "has no column 'label'" in missing.output


def test_the_command_line_reports_and_exits_3_when_asked(run_cli, base):
    result = run_cli(NAME, "--train", str(base), "--json", "--fail-if-not-packaged", "--bootstrap", "100")
    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["packaged"] is False and document["comparison"]["decided_by"] == "data"
    assert "challenger not packaged: data gate" in result.stderr


def test_with_signing_configured_the_challenger_is_signed(tmp_path, store, base):
    from service.models.demo import train_demo
    from service.security import signing

    private, public, _ = signing.generate(tmp_path / "keys")
    root = tmp_path / "signed"
    train_demo(root, signing_key=signing.model_keys(private_key_file=private))
    log_shifted_traffic(store, root, 1.5)
    keys = signing.model_keys(trusted=[public], private_key_file=private)
    report = retrain(Request(NAME, base, "target", 2 * 3600, bootstrap=200), Services(root, store, keys, "cli:t"), now=NOW)
    assert report["packaged"]
    verified = artifacts.verify_version(artifacts.version_dir(root, NAME, 2), signing_key=signing.model_keys(trusted=[public]))
    assert verified.manifest["signature"] and verified.manifest["retrain"]["parent_version"] == 1
