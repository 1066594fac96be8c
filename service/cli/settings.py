"""``config``: check the environment the server would read, before Gunicorn starts."""

from __future__ import annotations

import click

SECRET_SETTINGS = ("signing_key", "pii_hash_key", "alert_webhook_url")


@click.command("config")
@click.option("--quiet", is_flag=True, help="Only check; print nothing when the configuration is good.")
def check_config(quiet: bool) -> None:
    """Check the configuration the server would read from the environment, and print it."""
    from dataclasses import fields

    from service.config import Config
    from service.errors import ConfigError
    from service.monitoring.alert_rules import load_rules

    try:
        config = Config.from_env()
        load_rules(config.alert_rules_file)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    if quiet:
        return
    for f in fields(Config):
        click.echo(f"{f.metadata['env']:<24} {_shown(f.name, getattr(config, f.name))}")


def _shown(name: str, value: object) -> object:
    """Hide secrets: keys and webhook URLs entirely, database credentials by scheme only."""
    if name == "database_url" and "@" in str(value):
        return str(value).split("://", 1)[0] + "://..."
    return "(set)" if name in SECRET_SETTINGS and value else value


COMMANDS = (check_config,)
