"""``config``: check the environment the server would read, before Gunicorn starts."""

from __future__ import annotations

import click

SECRET_SETTINGS = ("signing_key", "pii_hash_key", "alert_webhook_url")


@click.command("config")
@click.option("--quiet", is_flag=True, help="Only check; print nothing when the configuration is good.")
@click.option("--markdown", is_flag=True,
              help="Print every setting, its default and meaning as a Markdown table (the docs' settings reference).")
def check_config(quiet: bool, markdown: bool) -> None:
    """Check the configuration the server would read from the environment, and print it."""
    from dataclasses import fields

    from service.config import Config

    if markdown:
        click.echo(settings_table())
        return
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
    if name in SECRET_SETTINGS and value:
        return "(set)"
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def settings_table() -> str:
    """The settings reference's table (docs/reference/settings.md), from the one place settings are declared (``Config``)."""
    from service.config import Config

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, default, meaning in Config.describe():
        rows.append(f"| `{variable}` | {default} | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


COMMANDS = (check_config,)
