"""Pieces every command-line module shares: options, the actor name, clean failures."""

from __future__ import annotations

import functools
import getpass
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from service.config import Config
from service.errors import ArtifactError, ConfigError, QualityGateFailed, ServiceError
from service.models import artifacts
from service.security import signing


def setting(name: str):
    """The default of a ``Config`` field, so a command's option and the server agree on it."""
    return Config.__dataclass_fields__[name].default


ARTIFACTS = click.option("--artifacts-dir", envvar="ARTIFACTS_DIR", default=setting("artifacts_dir"), show_default=True,
                         type=click.Path(file_okay=False, path_type=Path), help="Registry root (env ARTIFACTS_DIR).")
def SIGNING_KEY(command: Callable[..., Any]) -> Callable[..., Any]:  # noqa: N802  (used like the options above)
    """The keys a command signs and verifies manifests with, handed to it as one ``signing_key`` value."""

    @functools.wraps(command)
    def wrapper(*args: Any, signing_key: str | None, trusted_keys: tuple[Path, ...], signing_key_file: Path | None,
                **kwargs: Any) -> Any:
        try:
            keys = signing.model_keys(signing_key, trusted_keys, signing_key_file)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        return command(*args, signing_key=keys, **kwargs)

    options = (
        click.option("--signing-key", envvar="MODEL_SIGNING_KEY", default=None,
                     help="Shared HMAC key to sign/verify manifests (env MODEL_SIGNING_KEY); Ed25519 is recommended."),
        click.option("--trusted-keys", envvar="MODEL_TRUSTED_KEYS", multiple=True,
                     type=click.Path(path_type=Path), callback=_split_paths,
                     help="Ed25519 public key files or folders that manifests must be signed by "
                          "(env MODEL_TRUSTED_KEYS, comma-separated)."),
        click.option("--signing-key-file", envvar="MODEL_SIGNING_PRIVATE_KEY_FILE", default=None,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Ed25519 private key to sign new versions with (env MODEL_SIGNING_PRIVATE_KEY_FILE)."),
    )
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _split_paths(_ctx: click.Context, _param: click.Parameter, value: tuple[Path, ...]) -> tuple[Path, ...]:
    # the variable holds a comma-separated list, like the server's setting
    return tuple(Path(part) for path in value for part in str(path).split(",") if part)


def existing_model(root: Path, name: str) -> str:
    """Return ``name`` when it is a legal name with a version under ``root``, else raise ``ValueError``."""
    # a folder alone is not a model: a refused change can leave one holding only a lock file
    if not artifacts.list_versions(root, artifacts.check_model_name(name)):
        raise ValueError(f"model {name!r} not found under {root}")
    return name


def model_argument(*, required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The NAME argument of a command over one model, refused in one line unless that model exists.

    The check runs once every parameter is parsed, since it needs ``--artifacts-dir`` too.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, name: str | None, artifacts_dir: Path, **kwargs: Any) -> Any:
            if name is not None:
                try:
                    existing_model(artifacts_dir, name)
                except ValueError as exc:
                    raise click.ClickException(str(exc)) from None
            return command(*args, name=name, artifacts_dir=artifacts_dir, **kwargs)

        return click.argument("name", required=required)(wrapper)

    return decorate


MODEL = model_argument()


def fails_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors users cause into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ValueError, OSError, sqlite3.Error, ArtifactError, QualityGateFailed, ServiceError) as exc:
            if isinstance(exc, OSError) and exc.strerror:
                message = f"{exc.strerror}: {exc.filename}" if exc.filename else f"could not write: {exc.strerror}"
            else:
                message = str(exc)
            raise click.ClickException(message) from None

    return wrapper


def escape(text: object) -> str:
    """Show control characters (newlines, ANSI escapes) as Python escapes: text someone stored
    (a change's reason) must not forge lines or recolour a terminal."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
