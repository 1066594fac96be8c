"""``serve``: check what the server would start with, then become Gunicorn; what ``make serve`` runs.

It works the same from a checkout and from an installed package (``sklearn-server serve``): the
settings come from the environment, the models from ``ARTIFACTS_DIR`` (relative paths are taken
from the current folder), and Gunicorn's settings from the ``gunicorn.conf.py`` found beside the
package: shipped inside it by the wheel, at the top of a checkout otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

#: Gunicorn's application: the factory ``wsgi.py`` calls, importable wherever the package is.
APPLICATION = "service.app:create_app()"
CONFIG_NAME = "gunicorn.conf.py"


def gunicorn_config() -> Path:
    """Return the gunicorn.conf.py to run: the installed package's copy, else the checkout's."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / CONFIG_NAME, package.parent / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    raise click.ClickException(f"no {CONFIG_NAME} in {package} nor beside it: reinstall the package")


def gunicorn_command(extra: tuple[str, ...] = ()) -> list[str]:
    """Return the command line that serves with this interpreter's Gunicorn."""
    return [sys.executable, "-m", "gunicorn", "-c", str(gunicorn_config()), *extra, APPLICATION]


@click.command("serve", context_settings={"ignore_unknown_options": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def serve(ctx: click.Context, gunicorn_args: tuple[str, ...]) -> None:
    """Serve on HOST:PORT with Gunicorn, after the checks ``make serve`` makes.

    The configuration is checked, each model's registry.json against the audit trail (models
    packaged with another DATABASE_URL stop here with the `registry adopt` line to run, rather than
    starting workers that refuse them), and without API_KEYS_FILE the local admin key is made once
    and printed. Then this process becomes the Gunicorn master (its pid is the server's); any
    GUNICORN_ARGS are passed on to Gunicorn.
    """
    from service.cli.keys import ensure_local_admin
    from service.cli.registry import check
    from service.cli.settings import check_config
    from service.config import Config
    from service.errors import ConfigError

    ctx.invoke(check_config, quiet=True, markdown=False)
    try:
        artifacts_dir = Config.from_env().artifacts_dir
    except ConfigError as exc:  # already said by check_config; kept for a changed environment
        raise click.ClickException(f"configuration error: {exc}") from None
    ctx.invoke(check, name=None, artifacts_dir=artifacts_dir)
    ctx.invoke(ensure_local_admin)
    command = gunicorn_command(gunicorn_args)
    click.echo(" ".join(command), err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # nosec B606  # noqa: S606  Gunicorn replaces this process, run with our own interpreter


COMMANDS = (serve,)
