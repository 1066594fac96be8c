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
from service.errors import ArtifactError, QualityGateFailed, ServiceError
from service.models import artifacts


def setting(name: str):
    """The default of a ``Config`` field, so a command's option and the server agree on it."""
    return Config.__dataclass_fields__[name].default


ARTIFACTS = click.option("--artifacts-dir", envvar="ARTIFACTS_DIR", default=setting("artifacts_dir"), show_default=True,
                         type=click.Path(file_okay=False, path_type=Path), help="Registry root (env ARTIFACTS_DIR).")
SIGNING_KEY = click.option("--signing-key", envvar="MODEL_SIGNING_KEY", default=None,
                           help="HMAC key to sign/verify manifests (env MODEL_SIGNING_KEY).")


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


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
