"""Commands over model versions on disk: train the demo, package, list, show, verify."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from service.cli.common import ARTIFACTS, MODEL, SIGNING_KEY, actor, fails_cleanly, model_argument, setting
from service.errors import ArtifactError
from service.models import artifacts, registry


@click.command("train-demo")
@ARTIFACTS
@SIGNING_KEY
@click.option("--force", is_flag=True, help="Package new versions even when the demo models exist.")
@click.option("--pmml", is_flag=True, help="Also convert each to PMML, kept when a PMML evaluator agrees within 1e-9 "
                                         "(needs requirements-dev.txt and Java).")
@click.option("--no-audit", "unaudited", is_flag=True,
              help="Record the packaging in no audit trail, for a build whose store is thrown away (an image): "
                   "the history then names no records, and the first server anchors the file as it is. "
                   "Without it, the history names records of DATABASE_URL's store, and a server with another "
                   "store refuses the models until `registry adopt`.")
@fails_cleanly
def train_demo(artifacts_dir: Path, signing_key: str | None, force: bool, pmml: bool, unaudited: bool) -> None:
    """Train the demo models (breast-cancer, diabetes) from scikit-learn's bundled data."""
    from service.models.demo import train_demo as train

    with _no_audit_trail() if unaudited else contextlib.nullcontext():
        written = train(artifacts_dir, force=force, signing_key=signing_key, pmml=pmml)
    for manifest in written:
        click.echo(f"packaged {manifest['name']} version {manifest['version']}: {_metrics_line(manifest)}")
        click.echo(f"{manifest['name']}: {backend_line(manifest)}", err=True)
        _say_pmml(manifest)
    if not written:
        click.echo(f"demo models already present under {artifacts_dir}; nothing to do")


@contextlib.contextmanager
def _no_audit_trail() -> Iterator[None]:
    """Within the block, registry changes name no audit record and are checked against none."""
    audit, verify = registry.AUDIT.set(None), registry.VERIFY.set(None)
    try:
        yield
    finally:
        registry.VERIFY.reset(verify)
        registry.AUDIT.reset(audit)


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A fitted estimator or Pipeline saved with joblib.dump.")
@click.option("--name", required=True, help="Model name: [a-z0-9][a-z0-9_-]{0,63}.")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hold-out CSV with the feature columns and the target.")
@click.option("--target", required=True, help="Name of the target column in --data.")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON overrides for the inferred schema: {feature: {type, min, max, categories, pii, ...}}; "
                   "types also decide how the CSV columns are read.")
@click.option("--features", "feature_list", default=None, metavar="A,B,C",
              help="Feature names in order, for a model fitted on an unnamed array.")
@click.option("--min", "minimums", multiple=True, metavar="METRIC=VALUE",
              help="Quality gate: metric must be >= value (cv.METRIC for cross-validated means).")
@click.option("--max", "maximums", multiple=True, metavar="METRIC=VALUE", help="Quality gate: metric must be <= value.")
@click.option("--cv", "folds", type=int, default=None, help="Cross-validate: refit clones K times on --train.")
@click.option("--train", "train_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training CSV (features and target) for --cv; the drift reference unless --reference is given.")
@click.option("--breaking", is_flag=True,
              help="Accept a version whose task, classes or features differ from production's.")
@click.option("--strict-ranges", is_flag=True, help="Reject numbers outside the range seen in --data.")
@click.option("--reference", "reference_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training-data CSV to profile as the drift reference (default: --data).")
@click.option("--subject", default=None, metavar="FEATURE",
              help="The feature that identifies the person a row is about (e.g. customer_id): recorded as the "
                   "manifest's subject, for erasure; always treated as personal data (pii).")
@click.option("--description", default="", help="What the model is.")
@click.option("--changelog", default="", help="What changed in this version.")
@click.option("--card", "card_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Markdown for the model card: intended use and limitations, in people's words.")
@click.option("--pmml", is_flag=True, help="Also convert to PMML, kept when a PMML evaluator agrees with the model within "
                                         "1e-9 on --data (needs requirements-dev.txt and Java).")
@click.option("--require-card/--no-require-card", envvar="REQUIRE_MODEL_CARD", default=setting("require_model_card"),
              help="Refuse to package without --card (env REQUIRE_MODEL_CARD).")
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def package(model_path: Path, name: str, data: Path, target: str, schema_path: Path | None, feature_list: str | None,
            minimums: tuple[str, ...], maximums: tuple[str, ...], folds: int | None, train_path: Path | None,
            breaking: bool, strict_ranges: bool, reference_path: Path | None, subject: str | None,
            description: str, changelog: str, pmml: bool,
            card_path: Path | None, require_card: bool, artifacts_dir: Path, signing_key: str | None) -> None:
    """Evaluate, gate and package a joblib model as the next version of NAME."""
    from service.models.package_inputs import read_inputs
    from service.models.packaging import Threshold, package_model

    thresholds = [Threshold.parse(t, "min") for t in minimums] + [Threshold.parse(t, "max") for t in maximums]
    inputs = read_inputs(model_path, data, target, schema_path=schema_path, feature_list=feature_list,
                         reference_path=reference_path, train_path=train_path, folds=folds)
    for line in inputs.warnings:
        click.echo(f"warning: {line}", err=True)
    manifest = package_model(inputs.model, name, artifacts_dir, inputs.X, inputs.y,
                             description=description, changelog=changelog, overrides=inputs.overrides,
                             thresholds=thresholds, cv=inputs.cv, strict_ranges=strict_ranges,
                             signing_key=signing_key, training_data=_training_data(reference_path or train_path),
                             evaluation_source=str(data),
                             reference=inputs.reference, card=card_path.read_text(encoding="utf-8") if card_path else "",
                             require_card=require_card, feature_names=inputs.feature_names, breaking=breaking,
                             pickled_with=inputs.pickled_with, subject=subject, pmml=pmml)
    entry = registry.record_packaged(artifacts_dir, manifest, actor=actor())
    click.echo(f"packaged {name} version {manifest['version']}: {_metrics_line(manifest)}")
    click.echo(f"{name}: {backend_line(manifest)}", err=True)
    _say_pmml(manifest)
    if entry.get("label"):
        click.echo(f"{name} had no production version; version {manifest['version']} is now production")
    _describe(manifest)


def _say_pmml(manifest: dict[str, Any]) -> None:
    """Say what became of the PMML export asked for: stored, with its parity, or why not (on stderr)."""
    from service.models import pmml_export

    report = (manifest.get("exports") or {}).get("pmml")
    if report is None:
        return
    version = f"{manifest['name']} version {manifest['version']}"
    if report.get("status") == pmml_export.OK:
        click.echo(f"{version}: stored {pmml_export.PMML_FILE}, its PMML evaluator agrees on {report['rows']} hold-out "
                   f"rows within {report['max_abs_diff']:.3g}")
    else:
        click.echo(f"{version}: no PMML recorded ({report.get('status')}): {report.get('reason')}", err=True)


def _training_data(path: Path | None) -> dict[str, Any] | None:
    """What the model was trained on, when the command was told: --data is the hold-out, never the training set."""
    return None if path is None else {"source": str(path)}


def _describe(manifest: dict[str, Any]) -> None:
    """Tell the person packaging how the version was made (stderr: stdout stays the result lines)."""
    from service.models.schema_inference import describe_sources

    say = functools.partial(click.echo, err=True)
    cv = manifest["metrics"].get("cv") or {}
    if cv:
        say(f"cross-validation ({cv['folds']} folds): " + ", ".join(
            f"{k}={v['mean']:.4f}±{v['std']:.4f}" for k, v in cv.items() if isinstance(v, dict)))
    note = manifest["metrics"].get("averaging", {}).get("note")
    if note:
        say(note)
    say("schema sources:")
    for line in describe_sources(manifest["input"].get("sources", {})):
        say(line)
    for line in manifest["input"].get("notes", []):
        say(f"warning: {line}")
    changes = manifest.get("compatibility") or {}
    if changes.get("breaking"):
        say(f"breaking against version {changes['against_version']}: {'; '.join(changes['breaking'])}")


@click.command("list")
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


@click.command()
@MODEL
@click.argument("version", required=False, type=click.IntRange(min=1))
@click.option("--full", is_flag=True, help="Include the reference profile.")
@ARTIFACTS
@fails_cleanly
def show(name: str, version: int | None, full: bool, artifacts_dir: Path) -> None:
    """Show a version's manifest (the production version when VERSION is omitted)."""
    if version is None:
        version = registry.read_state(artifacts_dir, name)["labels"].get(registry.PRODUCTION)
        if version is None:
            raise ValueError(f"model {name!r} has no production label; name a version")
    if version not in artifacts.list_versions(artifacts_dir, name):
        raise ValueError(f"model {name!r} has no version {version}")
    manifest = artifacts.read_manifest(artifacts.version_dir(artifacts_dir, name, version))
    if not full:
        manifest.pop("reference_profile", None)
    click.echo(json.dumps(manifest, indent=2))


@click.command()
@model_argument(required=False)
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def verify(name: str | None, artifacts_dir: Path, signing_key: str | None) -> None:
    """Verify the hashes (and signatures) of every version on disk; exit 1 if any fails."""
    import sklearn

    names = [name] if name else artifacts.list_models(artifacts_dir)
    if not names:
        click.echo(f"no models under {artifacts_dir}")
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


def backend_line(manifest: dict[str, Any]) -> str:
    """Which backend serves the version by default and why (``onnx_export.backend_line``)."""
    from service.models.onnx_export import backend_line as line

    return line(manifest)


def _metrics_line(manifest: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in manifest["metrics"]["holdout"].items())


COMMANDS = (train_demo, package, list_models, show, verify)
