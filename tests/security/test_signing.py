"""Ed25519 model signing: key pairs, signing at packaging, verification with trusted public keys."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.errors import ConfigError
from service.models import artifacts
from service.security import signing
from tests.conftest import SCRUBBED_ENV
from tests.models.test_artifacts import edit_manifest, package_tiny, refusal


@pytest.fixture
def pair(tmp_path):
    private, public, kid = signing.generate(tmp_path / "keys")
    return private, public, kid


def test_keygen_writes_a_private_key_only_its_owner_reads(pair):
    private, public, kid = pair
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.name == f"model-signing-{kid}.pub" and len(kid) == 16
    assert kid == signing.key_id(signing.load_private_key(private).public_key())


def test_keygen_never_overwrites_a_private_key(pair):
    with pytest.raises(FileExistsError):
        signing.generate(pair[0].parent)


def test_a_version_signed_with_the_private_key_verifies_with_the_public_one(tmp_path, pair):
    private, public, kid = pair
    folder = package_tiny(tmp_path / "a", signing_key=signing.model_keys(private_key_file=private))
    manifest = artifacts.read_manifest(folder)
    assert manifest["signature"].startswith(f"ed25519:{kid}:")
    verified = artifacts.verify_version(folder, signing_key=signing.model_keys(trusted=[public]))
    assert verified.manifest["version"] == 1


def test_a_signature_by_an_untrusted_key_is_refused(tmp_path, pair):
    other_private, other_public, other_kid = signing.generate(tmp_path / "other")
    folder = package_tiny(tmp_path / "a", signing_key=signing.model_keys(private_key_file=other_private))
    message = refusal(folder, signing_key=signing.model_keys(trusted=[pair[1]]))
    assert message == f"manifest is signed by key {other_kid!r}, which is not a trusted key"


def test_an_edited_manifest_is_refused(tmp_path, pair):
    folder = package_tiny(tmp_path / "a", signing_key=signing.model_keys(private_key_file=pair[0]))
    edit_manifest(folder, lambda m: m["output"].update(classes=[1, 0]))
    assert refusal(folder, signing_key=signing.model_keys(trusted=[pair[1]])) == "manifest signature does not match"


def test_an_unsigned_version_is_refused_when_keys_are_trusted(tmp_path, pair):
    folder = package_tiny(tmp_path / "a")
    message = refusal(folder, signing_key=signing.model_keys(trusted=[pair[1]]))
    assert message == "manifest is not signed and MODEL_TRUSTED_KEYS requires a signature"


def test_rotation_trusts_every_key_of_a_folder(tmp_path, pair):
    new_private, _, _ = signing.generate(tmp_path / "keys-new")
    (tmp_path / "keys" / "new.pub").write_bytes((tmp_path / "keys-new").joinpath(
        next(p.name for p in (tmp_path / "keys-new").iterdir() if p.suffix == ".pub")).read_bytes())
    trusted = signing.model_keys(trusted=[tmp_path / "keys"])
    assert len(trusted.public_keys) == 2
    old = package_tiny(tmp_path / "a", signing_key=signing.model_keys(private_key_file=pair[0]))
    new = package_tiny(tmp_path / "b", signing_key=signing.model_keys(private_key_file=new_private))
    for folder in (old, new):
        assert artifacts.verify_version(folder, signing_key=trusted).manifest["signature"].startswith("ed25519:")


def test_hmac_mode_still_works_beside_trusted_keys(tmp_path, pair):
    folder = package_tiny(tmp_path / "a", signing_key="shared")
    keys = signing.model_keys("shared", [pair[1]])
    assert artifacts.verify_version(folder, signing_key=keys).manifest["signature"].startswith("hmac-sha256:")
    assert refusal(folder, signing_key=signing.model_keys(trusted=[pair[1]])) == \
        "manifest carries no Ed25519 signature and no HMAC key is configured"


def test_a_file_that_is_no_public_key_is_named(tmp_path, pair):
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="bad.pub is not a PEM public key"):
        signing.model_keys(trusted=[bad])
    with pytest.raises(ConfigError, match="not an Ed25519 public key|not a PEM public key"):
        signing.model_keys(trusted=[pair[0]])  # the private key given where a public one belongs


def test_cli_keygen_package_and_verify(tmp_path):
    env = {**{name: None for name in SCRUBBED_ENV}, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    runner = CliRunner(env=env)
    made = runner.invoke(cli, ["keys", "signing-keygen", "--out", str(tmp_path / "k")])
    assert made.exit_code == 0, made.output
    kid = made.stdout.strip()
    root = tmp_path / "artifacts"
    package_tiny(root, signing_key=signing.model_keys(private_key_file=tmp_path / "k" / signing.PRIVATE_FILE))
    public = tmp_path / "k" / f"model-signing-{kid}.pub"
    ok = runner.invoke(cli, ["verify", "--artifacts-dir", str(root), "--trusted-keys", str(public)])
    assert ok.exit_code == 0 and "ok      tiny 1" in ok.output
    unsigned = package_tiny(tmp_path / "plain")
    failed = runner.invoke(cli, ["verify", "--artifacts-dir", str(unsigned.parent.parent)],
                           env={"MODEL_TRUSTED_KEYS": f"{public},{public}"})
    assert failed.exit_code == 1 and "requires a signature" in failed.output


def test_a_private_key_others_can_read_is_refused(pair):
    private = pair[0]
    os.chmod(private, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        signing.model_keys(private_key_file=private)
