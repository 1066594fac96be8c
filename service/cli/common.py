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
from service.errors import ArtifactError, QualityGateFailed


def setting(name: str):
    """The default of a ``Config`` field, so a command's option and the server agree on it."""
    return Config.__dataclass_fields__[name].default


ARTIFACTS = click.option("--artifacts-dir", envvar="ARTIFACTS_DIR", default=setting("artifacts_dir"), show_default=True,
                         type=click.Path(file_okay=False, path_type=Path), help="Registry root (env ARTIFACTS_DIR).")
SIGNING_KEY = click.option("--signing-key", envvar="MODEL_SIGNING_KEY", default=None,
                           help="HMAC key to sign/verify manifests (env MODEL_SIGNING_KEY).")


def fails_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors users cause into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ValueError, OSError, sqlite3.Error, ArtifactError, QualityGateFailed) as exc:
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
