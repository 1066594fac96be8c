"""``export``: copy a version's portable model file (ONNX or PMML) out of the registry, verified.

Without ``--out`` the file goes to ``exports/`` under the current folder (made when needed,
ignored by git): never loose into a checkout's root, and never into the version's own folder,
which must hold exactly the files its manifest lists. The line printed names the full path.
"""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ARTIFACTS, MODEL, SIGNING_KEY, fails_cleanly

DEFAULT_FOLDER = Path("exports")


@click.command("export")
@MODEL
@click.argument("version", type=click.IntRange(min=1))
@click.option("--format", "fmt", type=click.Choice(["onnx", "pmml"]), required=True, help="The file format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it (default: exports/NAME-VERSION.FORMAT under the current folder).")
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def export(name: str, version: int, fmt: str, out: Path | None, artifacts_dir: Path, signing_key: str | None) -> None:
    """Write NAME's VERSION as ONNX or PMML: the file packaging converted and parity-checked, hash verified.

    PMML exists for versions packaged with --pmml whose PMML evaluator agreed with the model.
    """
    from service.models.exporting import export_version

    target = out or Path.cwd() / DEFAULT_FOLDER / f"{name}-{version}.{fmt}"
    written = export_version(artifacts_dir, name, version, fmt, target, signing_key=signing_key)
    click.echo(f"exported {name} version {version} as {fmt} to {written['file']} (sha256 {written['sha256']})")


COMMANDS = (export,)
