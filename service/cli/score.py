"""``score``: a file of rows scored with a model version, with the API's guarantees (``service.batch``).

Exit 0 when the run finished (rows may have been rejected: they are in the rejects file), 1 when
it could not start or stopped (``--max-rejects``, a refused version, a resume that would mix two
versions), 2 for a usage error. stdout gets one JSON line, the run's summary; stderr a progress
line while a terminal watches.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from service.cli.common import ARTIFACTS, SIGNING_KEY, actor, fails_cleanly
from service.cli.monitoring import DATABASE
from service.config import Config
from service.errors import ConfigError

FORMATS = ("csv", "parquet", "jsonl")
MAX_REJECTS_RE = re.compile(r"(?:(\d+)|(\d+(?:\.\d+)?)%)")


def _names(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    # comma-separated, and the option may be repeated
    return tuple(dict.fromkeys(part.strip() for item in value for part in item.split(",") if part.strip()))


def _max_rejects(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int | None, float | None]:
    if value is None:
        return None, None
    found = MAX_REJECTS_RE.fullmatch(value.strip())
    if found is None:
        raise click.BadParameter("a count (100) or a percentage of the rows read (1%)")
    if found.group(1) is not None:
        return int(found.group(1)), None
    share = float(found.group(2)) / 100
    if share > 1:
        raise click.BadParameter("a percentage is at most 100%")
    return None, share


@click.command()
@click.argument("model_spec", metavar="MODEL[@LABEL|:VERSION]")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input-format", type=click.Choice(FORMATS), default=None, help="Default: from INPUT's extension.")
@click.option("--output-format", type=click.Choice(FORMATS), default=None, help="Default: from OUTPUT's extension.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON Lines of the rows that failed validation, with the API's 422 error for each "
                   "(default: OUTPUT.rejects.jsonl).")
@click.option("--keep", multiple=True, callback=_names, metavar="COL,COL",
              help="Input columns copied to each output row (and reject), e.g. id,customer_id.")
@click.option("--ignore-columns", "ignore", multiple=True, callback=_names, metavar="COL,COL",
              help="Input columns that are neither features nor kept; any other unknown column is refused.")
@click.option("--probabilities", is_flag=True, help="Add one probability_<class> column per class.")
@click.option("--chunk-rows", type=click.IntRange(1, 10_000_000), default=50_000, show_default=True,
              help="Rows read, validated and written at a time: memory is bounded by this, not by the file.")
@click.option("--max-rejects", callback=_max_rejects, default=None, metavar="N|P%",
              help="Stop (exit 1) once more than N rows, or more than P% of the rows read, are rejected.")
@click.option("--monitor-sample", type=click.IntRange(min=0), default=5_000, show_default=True,
              help="Rows written to the prediction log, for drift and data quality (0: none).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run writing OUTPUT, with the same ids.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT, or the state of an interrupted run.")
@ARTIFACTS
@SIGNING_KEY
@DATABASE
@fails_cleanly
def score(model_spec: str, input_path: Path, output_path: Path, input_format: str | None, output_format: str | None,
          rejects_path: Path | None, keep: tuple[str, ...], ignore: tuple[str, ...], probabilities: bool,
          chunk_rows: int, max_rejects: tuple[int | None, float | None], monitor_sample: int, resume: bool,
          overwrite: bool, artifacts_dir: Path, signing_key: str | None, database_url: str) -> None:
    """Score INPUT (CSV, Parquet or JSON Lines) into OUTPUT with MODEL's production version, another
    label's (@LABEL) or a pinned one (:VERSION): validated like the API, resumable, recorded."""
    if importlib.util.find_spec("pyarrow") is None:  # requirements-batch.txt: not in the runtime set
        raise click.ClickException("batch scoring needs pyarrow, which the runtime install leaves out: run `make batch` "
                                   "in the checkout, or pip install 'sklearn-server[batch]'")
    from service.batch.digest import Digest

    input_sha256 = Digest(input_path)  # read while the imports and the model load below take their seconds
    try:
        _score(input_sha256, model_spec, input_path, output_path, input_format, output_format, rejects_path, keep,
               ignore, probabilities, chunk_rows, max_rejects, monitor_sample, resume, overwrite, artifacts_dir,
               signing_key, database_url)
    finally:
        input_sha256.cancel()  # a run that stopped before it needed the hash does not wait for it


def _score(input_sha256: Any, model_spec: str, input_path: Path, output_path: Path, input_format: str | None,
           output_format: str | None, rejects_path: Path | None, keep: tuple[str, ...], ignore: tuple[str, ...],
           probabilities: bool, chunk_rows: int, max_rejects: tuple[int | None, float | None], monitor_sample: int,
           resume: bool, overwrite: bool, artifacts_dir: Path, signing_key: str | None, database_url: str) -> None:
    from service.batch import reading

    reading.skip_pandas_probe()
    from service.batch.run import Options, Services, Stopped
    from service.batch.run import score as run_score
    from service.batch.target import parse
    from service.serving.runtime import BackendChoice
    from service.store import Store

    try:
        config = Config.from_env()
        backend = BackendChoice.parse(config.model_backend, config.model_backends)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    target = parse(model_spec)
    options = Options(
        target=target, input=input_path, output=output_path,
        rejects=rejects_path or output_path.with_name(output_path.name + ".rejects.jsonl"),
        input_format=reading.format_of(input_path, input_format),
        output_format=reading.format_of(output_path, output_format), keep=keep, ignore=ignore,
        probabilities=probabilities, chunk_rows=chunk_rows, max_rejects=max_rejects[0],
        max_reject_share=max_rejects[1], monitor_sample=monitor_sample, resume=resume, overwrite=overwrite,
        input_sha256=input_sha256)
    services = Services(artifacts_dir, Store.from_url(database_url), signing_key, backend(target.name),
                        config.pii_hash_key, actor())
    line = _ProgressLine() if sys.stderr.isatty() else None
    try:
        summary = run_score(options, services, progress=line)
    except Stopped as stopped:
        _finish(line, stopped.summary)
        raise click.ClickException(str(stopped)) from None
    _finish(line, summary)


def _finish(line: _ProgressLine | None, summary: dict) -> None:
    if line is not None:
        line.done()
    for warning in summary.pop("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps(summary, separators=(",", ":")))


class _ProgressLine:
    """One line on a terminal, rewritten after each chunk: rows, rejects, rows/s and time left."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None  # (fraction read, seconds) at the first chunk
        self.shown = False
        self.last = 0.0

    def __call__(self, progress) -> None:  # service.batch.run.Progress
        rate = progress.rows_this_process / progress.seconds if progress.seconds > 0 else 0.0
        eta = ""
        if progress.fraction is not None:
            if self.first is None:
                self.first = (progress.fraction, progress.seconds)
            else:
                done, spent = progress.fraction - self.first[0], progress.seconds - self.first[1]
                if done > 0:
                    eta = f", about {_duration(spent / done * (1 - progress.fraction))} left"
        now = time.monotonic()
        if now - self.last < 0.2 and progress.fraction not in (None, 1.0):
            return
        self.last = now
        click.echo(f"\r{progress.rows:,} rows read, {progress.rejected:,} rejected, {rate:,.0f} rows/s{eta}\x1b[K",
                   err=True, nl=False)
        self.shown = True

    def done(self) -> None:
        if self.shown:
            click.echo("", err=True)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


COMMANDS = (score,)
