"""``keys``: create, list and revoke API keys in ``API_KEYS_FILE`` (else the local keys file); make the local admin key.

A thin shell over the functions in ``service.security.keys``; the plaintext of a new key goes to
stdout exactly once (so scripts can capture it) and everything meant for a human to stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from service.cli.audit import record as audit_record
from service.errors import ConfigError
from service.security import keys as security
from service.security import signing


def _file_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--file",
        "path",
        envvar="API_KEYS_FILE",
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The keys file (JSON of hashed keys); unset = the one the server reads without API_KEYS_FILE "
             "(LOCAL_ADMIN_KEYS_FILE, var/local-admin-keys.json).",
    )(f)


def _keys_file(path: Path | None) -> Path:
    """The file to manage: ``--file``/``API_KEYS_FILE``, else the local keys file a server without
    API_KEYS_FILE reads (it checks proxied calls and admin calls against it)."""
    if path is not None:
        return path
    from service.config import Config

    return Config.from_env().local_admin_keys_file


def _where(path: Path, given: Path | None) -> str:
    return str(path) if given is not None else f"{path}, which the server reads while API_KEYS_FILE is unset"


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn expected failures into ``Error: <reason>`` and exit 1, without a traceback."""
    try:
        yield
    except (ValueError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None


@click.group()
def keys() -> None:
    """Manage the API keys the server accepts."""


@keys.command("create")
@click.option("--name", "key_id", required=True, help="Key id, e.g. ci-deployer ([a-z0-9][a-z0-9_.-]{0,63}).")
@click.option("--scopes", required=True, help="Comma-separated: " + ",".join(security.SCOPES) + ".")
@_file_option
def create(key_id: str, scopes: str, path: Path | None) -> None:
    """Create a key and print it once; only its hash is stored."""
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    with _one_line_errors():
        keys_file = _keys_file(path)
        plaintext = security.create_key(keys_file, key_id, wanted)
    audit_record("key.create", f"key:{key_id}", {"scopes": wanted, "file": str(keys_file)})
    click.echo(plaintext)
    click.echo(f"Created key {key_id!r} ({','.join(wanted)}) in {_where(keys_file, path)}; copy it now, it will not "
               "be shown again.", err=True)


@keys.command("list")
@_file_option
def list_(path: Path | None) -> None:
    """List key ids, scopes and creation times (never hashes)."""
    with _one_line_errors():
        keys_file = _keys_file(path)
        found = security.list_keys(keys_file)
    if not found:
        click.echo(f"No keys in {_where(keys_file, path)}.", err=True)
        return
    rows = [("ID", "SCOPES", "CREATED_AT")]
    rows += [(k.id, ",".join(s for s in security.SCOPES if s in k.scopes), k.created_at) for k in found]
    width_id = max(len(r[0]) for r in rows)
    width_scopes = max(len(r[1]) for r in rows)
    for key_id, key_scopes, created_at in rows:
        click.echo(f"{key_id:<{width_id}}  {key_scopes:<{width_scopes}}  {created_at}".rstrip())


@keys.command("revoke")
@click.argument("key_id")
@_file_option
def revoke(key_id: str, path: Path | None) -> None:
    """Revoke a key; running servers stop accepting it within a second."""
    with _one_line_errors():
        keys_file = _keys_file(path)
        security.revoke_key(keys_file, key_id)
    audit_record("key.revoke", f"key:{key_id}", {"file": str(keys_file)})
    click.echo(f"Revoked key {key_id!r}.", err=True)


@keys.command("signing-keygen")
@click.option("--out", "folder", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the pair: model-signing.key (private, mode 0600) and model-signing-<id>.pub.")
def signing_keygen(folder: Path) -> None:
    """Make an Ed25519 key pair for signing models: the private key stays with packaging, servers
    trust the public one (MODEL_TRUSTED_KEYS)."""
    with _one_line_errors():
        try:
            private, public, kid = signing.generate(folder)
        except FileExistsError:
            raise ValueError(f"{folder / signing.PRIVATE_FILE} exists; it is never overwritten") from None
    audit_record("signing_key.create", f"signing-key:{kid}", {"public_key": str(public)})
    click.echo(kid)
    click.echo(f"Private key {private} (mode 0600): package with --signing-key-file or MODEL_SIGNING_PRIVATE_KEY_FILE.\n"
               f"Public key {public}: give it to servers in MODEL_TRUSTED_KEYS.", err=True)


@keys.command("ensure-local-admin")
def ensure_local_admin() -> None:
    """Without API_KEYS_FILE, make sure a local admin key exists (``make serve`` runs this).

    Admin calls always need a key, also on loopback; the first run creates one in
    LOCAL_ADMIN_KEYS_FILE (hashed, mode 0600) and prints it once. Later runs say nothing.
    """
    from service.config import Config

    with _one_line_errors():
        config = Config.from_env()
        if config.api_keys_file is not None:
            return  # keys come from API_KEYS_FILE; nothing is open and nothing to make
        plaintext = security.ensure_local_admin(config.local_admin_keys_file)
    if plaintext is None:
        return
    click.echo(plaintext)
    base = f"http://{'[' + config.host + ']' if ':' in config.host else config.host}:{config.port}"
    click.echo(
        f"Created the local admin key {security.LOCAL_ADMIN_ID!r} in {config.local_admin_keys_file} (only its hash is "
        "stored); copy it now, it will not be shown again.\n"
        "Predict and read calls straight from this machine need no key; admin calls (labels, rollout, promote, "
        "rollback) need this one:\n"
        f"  curl -X POST -H 'Authorization: Bearer <key>' -H 'Content-Type: application/json' {base}/v1/models/<m>:rollback\n"
        "Calls through a proxy need a key with their scope: `python -m service keys create --name app --scopes predict`.\n"
        f"Lost it? `python -m service keys revoke {security.LOCAL_ADMIN_ID}` and run this again.",
        err=True,
    )
