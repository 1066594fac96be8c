import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli.keys import keys
from service.security import keys as security

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "keys.json"


@pytest.fixture
def runner(keys_file):
    return CliRunner(env={"API_KEYS_FILE": str(keys_file)})


def test_create_prints_the_key_once(runner, keys_file):
    result = runner.invoke(keys, ["create", "--name", "ci-deployer", "--scopes", "predict, read"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("sk_") and "\n" not in key
    assert "will not be shown again" in result.stderr
    assert key not in result.stderr
    assert key not in keys_file.read_text()
    assert security.KeyStore(keys_file).authorize(key, "read").id == "ci-deployer"


def test_list_shows_ids_scopes_dates_never_hashes(runner, keys_file):
    key = security.create_key(keys_file, "ci-deployer", ["read", "predict"])
    security.create_key(keys_file, "ops", ["admin"])
    result = runner.invoke(keys, ["list"])
    assert result.exit_code == 0
    out = result.stdout.splitlines()
    assert out[0].split() == ["ID", "SCOPES", "CREATED_AT"]
    assert out[1].split()[:2] == ["ci-deployer", "predict,read"]
    assert out[2].split()[:2] == ["ops", "admin"]
    assert security.hash_key(key) not in result.output and key not in result.output


def test_list_empty(runner):
    result = runner.invoke(keys, ["list"])
    assert result.exit_code == 0
    assert result.stdout == "" and "No keys" in result.stderr


def test_revoke(runner, keys_file):
    security.create_key(keys_file, "old", ["read"])
    result = runner.invoke(keys, ["revoke", "old"])
    assert result.exit_code == 0 and "Revoked" in result.stderr
    assert security.list_keys(keys_file) == []


def test_file_option_overrides_env(runner, tmp_path):
    other = tmp_path / "other.json"
    result = runner.invoke(keys, ["create", "--name", "a", "--scopes", "read", "--file", str(other)])
    assert result.exit_code == 0
    assert [k.id for k in security.list_keys(other)] == ["a"]


@pytest.mark.parametrize(
    "args, reason",
    [
        (["create", "--name", "Bad", "--scopes", "read"], "invalid key id"),
        (["create", "--name", "ok", "--scopes", "read,root"], "unknown scope(s) root"),
        (["create", "--name", "ok", "--scopes", ","], "at least one scope"),
        (["revoke", "ghost"], "no key named 'ghost'"),
    ],
)
def test_failures_are_one_line(runner, args, reason):
    result = runner.invoke(keys, args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and reason in result.stderr
    assert "Traceback" not in result.output


def test_malformed_file_is_one_line(runner, keys_file):
    keys_file.write_text("{")
    result = runner.invoke(keys, ["list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "not valid JSON" in result.stderr


def test_without_api_keys_file_the_keys_go_where_the_open_server_reads(tmp_path):
    """After `make serve`, `keys create --name app --scopes predict` needs no flag: the key lands in the
    local keys file, which a server without API_KEYS_FILE checks proxied calls against."""
    from service.config import Config

    local = tmp_path / "var" / "local-admin-keys.json"
    runner = CliRunner(env={"API_KEYS_FILE": None, "LOCAL_ADMIN_KEYS_FILE": str(local),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'audit.db'}"})
    assert runner.invoke(keys, ["ensure-local-admin"]).exit_code == 0
    created = runner.invoke(keys, ["create", "--name", "app", "--scopes", "predict"])
    assert created.exit_code == 0, created.output
    assert f"in {local}, which the server reads while API_KEYS_FILE is unset" in created.stderr
    policy = security.load_policy(Config(local_admin_keys_file=local))
    assert policy.store.authorize(created.stdout.strip(), "predict").id == "app"
    listed = runner.invoke(keys, ["list"])
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["local-admin", "app"]
    assert runner.invoke(keys, ["revoke", "app"]).exit_code == 0
    assert [k.id for k in security.list_keys(local)] == ["local-admin"]


def test_real_process_exit_codes_and_streams(keys_file):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", "from service.cli.keys import keys; keys()", *args],
            cwd=ROOT,
            env={"API_KEYS_FILE": str(keys_file), "PATH": "/usr/bin:/bin",
                 "DATABASE_URL": f"sqlite:///{keys_file.parent / 'audit.db'}"},  # key changes are audited
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = run("create", "--name", "ci-deployer", "--scopes", "predict,read")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith("sk_")
    assert ok.stderr.count("\n") == 1 and "will not be shown again" in ok.stderr

    dup = run("create", "--name", "ci-deployer", "--scopes", "read")
    assert dup.returncode == 1
    assert dup.stdout == ""
    assert dup.stderr.strip() == "Error: a key named 'ci-deployer' already exists; revoke it first or pick another name"


def test_ensure_local_admin_prints_the_key_once_with_how_to_use_it(tmp_path):
    path = tmp_path / "var" / "local-admin-keys.json"
    runner = CliRunner(env={"API_KEYS_FILE": None, "LOCAL_ADMIN_KEYS_FILE": str(path)})
    first = runner.invoke(keys, ["ensure-local-admin"])
    assert first.exit_code == 0, first.output
    key = first.stdout.strip()
    assert key.startswith("sk_") and key not in first.stderr and key not in path.read_text()
    assert "Authorization: Bearer <key>" in first.stderr and "will not be shown again" in first.stderr
    assert (path.stat().st_mode & 0o777) == 0o600
    assert security.KeyStore(path).authorize(key, "admin").id == "local-admin"
    again = runner.invoke(keys, ["ensure-local-admin"])
    assert again.exit_code == 0 and again.stdout == "" and again.stderr == ""
    assert len(security.list_keys(path)) == 1


def test_ensure_local_admin_does_nothing_when_api_keys_file_is_set(keys_file, tmp_path):
    local = tmp_path / "local.json"
    result = CliRunner(env={"API_KEYS_FILE": str(keys_file), "LOCAL_ADMIN_KEYS_FILE": str(local)}).invoke(
        keys, ["ensure-local-admin"])
    assert result.exit_code == 0 and result.stdout == ""
    assert not local.exists() and not keys_file.exists()
