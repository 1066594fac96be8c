"""The command line: ``python -m service <command>``; a thin shell over the core modules.

Every command exits 0 on success and non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from service import artifacts, registry
from service.cli_common import ARTIFACTS, SIGNING_KEY, actor, fails_cleanly
from service.cli_keys import keys
from service.cli_monitoring import COMMANDS as MONITORING_COMMANDS
from service.cli_rollout import COMMANDS as ROLLOUT_COMMANDS
from service.errors import ArtifactError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Package, inspect and serve scikit-learn models."""


cli.add_command(keys)
for _command in ROLLOUT_COMMANDS + MONITORING_COMMANDS:
    cli.add_command(_command)


@cli.command("train-demo")
@ARTIFACTS
@SIGNING_KEY
@click.option("--force", is_flag=True, help="Package new versions even when the demo models exist.")
@fails_cleanly
def train_demo(artifacts_dir: Path, signing_key: str | None, force: bool) -> None:
    """Train the demo models (breast-cancer, diabetes) from scikit-learn's bundled data."""
    from service.demo import train_demo as train

    written = train(artifacts_dir, force=force, signing_key=signing_key)
    for manifest in written:
        click.echo(f"packaged {manifest['name']} version {manifest['version']}: {_metrics_line(manifest)}")
    if not written:
        click.echo(f"demo models already present under {artifacts_dir}; nothing to do")


@cli.command()
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A fitted estimator or Pipeline saved with joblib.dump.")
@click.option("--name", required=True, help="Model name: [a-z0-9][a-z0-9_-]{0,63}.")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hold-out CSV with the feature columns and the target.")
@click.option("--target", required=True, help="Name of the target column in --data.")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON overrides for the inferred schema: {feature: {type, min, max, categories, pii, ...}}.")
@click.option("--min", "minimums", multiple=True, metavar="METRIC=VALUE", help="Quality gate: metric must be >= value.")
@click.option("--max", "maximums", multiple=True, metavar="METRIC=VALUE", help="Quality gate: metric must be <= value.")
@click.option("--strict-ranges", is_flag=True, help="Reject numbers outside the range seen in --data.")
@click.option("--reference", "reference_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training-data CSV to profile as the drift reference (default: --data).")
@click.option("--description", default="", help="What the model is.")
@click.option("--changelog", default="", help="What changed in this version.")
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def package(model_path: Path, name: str, data: Path, target: str, schema_path: Path | None, minimums: tuple[str, ...],
            maximums: tuple[str, ...], strict_ranges: bool, reference_path: Path | None, description: str, changelog: str,
            artifacts_dir: Path, signing_key: str | None) -> None:
    """Evaluate, gate and package a joblib model as the next version of NAME."""
    import joblib
    import pandas as pd

    from service.packaging import Threshold, package_model

    thresholds = [Threshold.parse(t, "min") for t in minimums] + [Threshold.parse(t, "max") for t in maximums]
    frame = pd.read_csv(data)
    if target not in frame.columns:
        raise ValueError(f"--target {target!r} is not a column of {data}")
    overrides = json.loads(schema_path.read_text()) if schema_path else None
    model = joblib.load(model_path)
    manifest = package_model(model, name, artifacts_dir, frame.drop(columns=[target]), frame[target],
                             description=description, changelog=changelog, overrides=overrides,
                             thresholds=thresholds, strict_ranges=strict_ranges, signing_key=signing_key,
                             training_data={"source": str(reference_path or data)},
                             reference=pd.read_csv(reference_path) if reference_path else None)
    entry = registry.record_packaged(artifacts_dir, manifest, actor=actor())
    click.echo(f"packaged {name} version {manifest['version']}: {_metrics_line(manifest)}")
    if entry.get("label"):
        click.echo(f"{name} had no production version; version {manifest['version']} is now production")


@cli.command("list")
@ARTIFACTS
@fails_cleanly
def list_models(artifacts_dir: Path) -> None:
    """List models, their versions and labels."""
    names = artifacts.list_models(artifacts_dir)
    if not names:
        click.echo(f"no models under {artifacts_dir}")
    for name in names:
        labels = registry.read_state(artifacts_dir, name)["labels"]
        versions = ", ".join(str(v) for v in artifacts.list_versions(artifacts_dir, name)) or "-"
        tags = ", ".join(f"{label}={v}" for label, v in sorted(labels.items())) or "-"
        click.echo(f"{name:<24} versions: {versions:<16} labels: {tags}")


@cli.command()
@click.argument("name")
@click.argument("version", required=False)
@click.option("--full", is_flag=True, help="Include the reference profile.")
@ARTIFACTS
@fails_cleanly
def show(name: str, version: str | None, full: bool, artifacts_dir: Path) -> None:
    """Show a version's manifest (the production version when VERSION is omitted)."""
    if version is None:
        version = registry.read_state(artifacts_dir, name)["labels"].get(registry.PRODUCTION)
        if version is None:
            raise ValueError(f"model {name!r} has no production label; name a version")
    manifest = artifacts.read_manifest(artifacts.version_dir(artifacts_dir, name, version))
    if not full:
        manifest.pop("reference_profile", None)
    click.echo(json.dumps(manifest, indent=2))


@cli.command()
@click.argument("name", required=False)
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def verify(name: str | None, artifacts_dir: Path, signing_key: str | None) -> None:
    """Verify the hashes (and signatures) of every version on disk; exit 1 if any fails."""
    import sklearn

    names = [artifacts.check_model_name(name)] if name else artifacts.list_models(artifacts_dir)
    failures = 0
    for model in names:
        for version in artifacts.list_versions(artifacts_dir, model):
            try:
                artifacts.verify_version(artifacts.version_dir(artifacts_dir, model, version), expected_name=model,
                                         expected_version=version, signing_key=signing_key,
                                         sklearn_version=sklearn.__version__)
                click.echo(f"ok      {model} {version}")
            except ArtifactError as exc:
                failures += 1
                click.echo(f"FAILED  {model} {version}: {exc}")
    if failures:
        raise click.ClickException(f"{failures} version(s) failed verification")


@cli.group()
def label() -> None:
    """Point labels (production, staging, ...) at versions."""


@label.command("set")
@click.argument("name")
@click.argument("label_name", metavar="LABEL")
@click.argument("version", type=int)
@click.option("--reason", default="", help="Why; recorded in the history.")
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def label_set(name: str, label_name: str, version: int, reason: str, artifacts_dir: Path,
              signing_key: str | None) -> None:
    """Point LABEL of NAME at VERSION (refused when that version fails verification)."""
    entry = registry.set_label(artifacts_dir, name, label_name, version, actor=actor(), reason=reason,
                               signing_key=signing_key)
    click.echo(f"{name}: {label_name} -> {version} (was {entry['previous']})")


@label.command("remove")
@click.argument("name")
@click.argument("label_name", metavar="LABEL")
@click.option("--reason", default="", help="Why; recorded in the history.")
@ARTIFACTS
@fails_cleanly
def label_remove(name: str, label_name: str, reason: str, artifacts_dir: Path) -> None:
    """Remove LABEL from NAME."""
    entry = registry.remove_label(artifacts_dir, name, label_name, actor=actor(), reason=reason)
    click.echo(f"{name}: removed {label_name} (was {entry['previous']})")


@cli.command()
@click.argument("name")
@ARTIFACTS
@fails_cleanly
def history(name: str, artifacts_dir: Path) -> None:
    """Print the change history of NAME, oldest first."""
    for entry in registry.read_state(artifacts_dir, artifacts.check_model_name(name))["history"]:
        what = " ".join(f"{k}={entry[k]}" for k in HISTORY_FIELDS if entry.get(k) not in (None, [], ""))
        click.echo(f"{entry['at']}  {entry['actor']:<20} {entry['action']:<18} {what}  {entry.get('reason', '')}".rstrip())


HISTORY_FIELDS = ("label", "version", "previous", "from", "to", "deleted", "previous_weight")


def _metrics_line(manifest: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in manifest["metrics"]["holdout"].items())


def main() -> None:
    cli(prog_name="python -m service")


SECRET_SETTINGS = ("signing_key", "pii_hash_key", "alert_webhook_url")


@cli.command("config")
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
