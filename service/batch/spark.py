"""Score a Spark DataFrame with the batch path's code, partition by partition, when one machine is not enough.

``score_dataframe`` runs on the driver: it resolves the version by label as a request does (the
registry checked against the audit trail), loads it verified to learn its features and classes,
and refuses a frame with missing or undeclared columns as the command line refuses such a file.
It returns a lazy frame built with ``mapInArrow``: each Python worker loads the pinned version
once, verified again (hashes and signature) and refused if its model file is not the one the
driver verified, then runs ``scoring.score_chunk`` on each Arrow batch, the code the command line
runs on each chunk. Arrow batches keep Spark's types, so a row is validated as the same row of a
Parquet file is. Every row comes back once: scored rows with the command line's output columns,
rejected rows with ``error`` (the API's 422 for that row, as JSON). ``row`` numbers the rows (a
column of the frame's, or Spark's ``monotonically_increasing_id``) and is what prediction ids and
reject details name. ``spark_run.write`` writes the result with a command-line run's record,
audit and monitoring sample. Needs pyspark (not a runtime dependency). No Flask.
"""

from __future__ import annotations

import json
import secrets
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from service.batch import rows, scoring, target
from service.batch.reading import Chunk
from service.config import Config
from service.errors import ArtifactError
from service.models.registry_anchor import RegistryAnchors
from service.security import signing
from service.serving.runtime import BackendChoice, LoadedModel
from service.serving.schemas import model_schema
from service.store import Store

ROW, ERROR = "row", "error"
_LOADED: dict[tuple[Any, ...], LoadedModel] = {}  # per Python worker: loaded once


@dataclass(frozen=True)
class Scored:
    """The lazy result: ``frame`` holds every row once; ``output`` and ``rejects`` are views of it.

    Persist ``frame`` before writing both views, or Spark scores the input twice."""

    frame: Any  # pyspark.sql.DataFrame
    keep: tuple[str, ...]
    run_id: str
    model: str
    version: int
    label: str | None
    source: Any = field(default=None, repr=False)  # the input frame's needed columns and its row column
    job: Any = field(default=None, repr=False)  # what the workers score with (_Job)
    loaded: LoadedModel | None = field(default=None, repr=False)  # the version, as the driver verified it

    @property
    def output(self) -> Any:
        """The scored rows, with the command line's output columns."""
        return self.frame.filter(self.frame[ERROR].isNull()).drop(ROW, ERROR)

    @property
    def rejects(self) -> Any:
        """The rejected rows: their number, their kept columns and the API's 422 for them (JSON)."""
        return self.frame.filter(self.frame[ERROR].isNotNull()).select(ROW, *self.keep, ERROR)


@dataclass(frozen=True)
class _Job:
    """What each worker needs: picklable, small."""

    root: str
    name: str
    version: int
    hmac_key: str | None
    trusted_keys: tuple[str, ...]
    backend: str
    model_sha256: str
    keep: tuple[str, ...]
    allowed: frozenset[str]
    probabilities: bool
    run_id: str
    row: str
    text: bool
    arrow_schema: pa.Schema


def score_dataframe(frame: Any, model: str, config: Config, *, keep: tuple[str, ...] = (), ignore: tuple[str, ...] = (),
                    probabilities: bool = False, row_column: str | None = None, text: bool = False,
                    actor: str = "spark") -> Scored:
    """Score ``frame`` with ``model`` (``MODEL``, ``MODEL@LABEL`` or ``MODEL:VERSION``) under ``config`` (the
    registry, store, keys and backend); ``text``: the values are CSV text, typed per feature as the command
    line types a CSV file. Raise ``ValueError``, ``ConfigError`` or ``ArtifactError`` on the driver before
    any row is scored. The registry folder and trusted key files must be readable at the same paths on
    every worker."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    wanted = target.parse(model)
    backend = BackendChoice.parse(config.model_backend, config.model_backends)(wanted.name)
    store = Store.from_url(config.database_url)
    resolved = target.resolve(config.artifacts_dir, wanted, RegistryAnchors(store, actor=actor))
    loaded = target.load(config.artifacts_dir, wanted.name, resolved.version,
                         signing_key=_keys(config.signing_key, config.trusted_keys), backend=backend)
    allowed = _check_columns(frame.columns, loaded, keep, ignore, row_column)
    if row_column is None:
        row_column = f"__{ROW}_{secrets.token_hex(4)}"
        frame = frame.withColumn(row_column, F.monotonically_increasing_id())
    elif not isinstance(frame.schema[row_column].dataType, T.IntegralType):
        raise ValueError(f"row column {row_column!r} must hold whole numbers, not {frame.schema[row_column].dataType}")
    fields = [frame.schema[key] for key in keep]
    fields.append(T.StructField(scoring.PREDICTION, _spark_type(scoring.prediction_type(loaded))))
    if probabilities:
        fields += [T.StructField(f"{scoring.PROBABILITY}{label}", T.DoubleType()) for label in loaded.classes or []]
    fields += [T.StructField(scoring.PREDICTION_ID, T.StringType()), T.StructField(scoring.MODEL, T.StringType()),
               T.StructField(scoring.VERSION, T.LongType()), T.StructField(ROW, T.LongType()),
               T.StructField(ERROR, T.StringType())]
    schema = T.StructType(fields)

    run_id = f"{time.time_ns():x}{secrets.token_hex(6)}"
    job = _Job(str(config.artifacts_dir), wanted.name, resolved.version, config.signing_key, config.trusted_keys,
               backend, _model_sha256(loaded), keep, allowed, probabilities, run_id, row_column, text,
               to_arrow_schema(schema))
    names = [spec["name"] for spec in loaded.features]
    needed = list(dict.fromkeys([*(n for n in names if n in frame.columns), *keep, row_column]))
    with warnings.catch_warnings():  # batches stay Arrow: pandas is never involved, whatever its version
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
        source = frame.select(*needed)
        scored = source.mapInArrow(lambda batches: _score_batches(job, batches), schema)
    return Scored(scored, keep, run_id, wanted.name, resolved.version, resolved.label, source, job, loaded)


def _check_columns(columns: list[str], model: LoadedModel, keep: tuple[str, ...], ignore: tuple[str, ...],
                   row_column: str | None) -> frozenset[str]:
    ours = {scoring.PREDICTION, scoring.PREDICTION_ID, scoring.MODEL, scoring.VERSION, ROW, ERROR}
    taken = [k for k in keep if k in ours or k.startswith(scoring.PROBABILITY)]
    if taken:
        raise ValueError(f"keep names a column the output writes itself: {', '.join(taken)}")
    missing = [k for k in (*keep, *([row_column] if row_column else [])) if k not in columns]
    missing += rows.missing_columns(model_schema(model.features), columns)
    if missing:
        raise ValueError(f"the frame lacks columns: {', '.join(missing)}")
    allowed = frozenset([*(spec["name"] for spec in model.features), *keep, *ignore, *([row_column] if row_column else [])])
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise ValueError(f"the frame has columns the model does not declare: {', '.join(unknown)}; carry them with "
                         "keep or leave them out with ignore")
    return allowed


def _keys(hmac_key: str | None, trusted: tuple[str, ...]) -> Any:
    """The verification keys, built where they are used: loaded key objects do not pickle."""
    return signing.model_keys(hmac_key, trusted)


def _spark_type(kind: pa.DataType) -> Any:
    from pyspark.sql import types as T

    return {pa.int64(): T.LongType(), pa.string(): T.StringType()}.get(kind, T.DoubleType())


def _model_sha256(model: LoadedModel) -> str:
    return str(model.manifest["files"][model.manifest["model_file"]]["sha256"])


def _worker_model(job: _Job) -> LoadedModel:
    """The pinned version, loaded and verified once per Python worker; refused if it is not the driver's."""
    key = (job.root, job.name, job.version, job.hmac_key, job.trusted_keys, job.backend)
    if key not in _LOADED:
        loaded = target.load(Path(job.root), job.name, job.version, signing_key=_keys(job.hmac_key, job.trusted_keys),
                             backend=job.backend)
        if _model_sha256(loaded) != job.model_sha256:
            raise ArtifactError(f"version {job.version} of {job.name!r} on this worker is not the one the driver "
                                "verified: its model file differs")
        _LOADED[key] = loaded
    return _LOADED[key]


def _score_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    model = _worker_model(job)
    schema = model_schema(model.features)
    for batch in batches:
        table = pa.Table.from_batches([batch])
        numbers = table.column(job.row).to_numpy(zero_copy_only=False).astype(np.int64)
        chunk = Chunk(0, 0, table.num_rows, table=table, text=job.text, numbers=numbers)
        scored = scoring.score_chunk(chunk, model, schema, job.allowed, job.keep, job.probabilities, job.run_id)
        yield from _rows(job, chunk, scored).to_batches()


def _rows(job: _Job, chunk: Chunk, scored: scoring.Scored) -> pa.Table:
    """Scored and rejected rows in one table of the job's schema."""
    good = scored.table.append_column(ROW, pa.array(scored.positions, pa.int64())).append_column(
        ERROR, pa.nulls(len(scored.positions), pa.string()))
    if not scored.rejects:
        return good.cast(job.arrow_schema)
    at = pa.array([i for i, _ in scored.rejects], pa.int64())
    n = len(at)
    columns = {}
    for column in job.arrow_schema:
        if column.name in job.keep:
            columns[column.name] = chunk.table.column(column.name).take(at)
        elif column.name == scoring.MODEL:
            columns[column.name] = pa.repeat(pa.scalar(job.name), n)
        elif column.name == scoring.VERSION:
            columns[column.name] = pa.repeat(pa.scalar(job.version, pa.int64()), n)
        elif column.name == ROW:
            columns[column.name] = pa.array(chunk.positions(at.to_numpy()), pa.int64())
        elif column.name == ERROR:
            columns[column.name] = pa.array([json.dumps(error.to_dict()) for _, error in scored.rejects], pa.string())
        else:
            columns[column.name] = pa.nulls(n, column.type)
    rejected = pa.table(columns).cast(job.arrow_schema)
    return pa.concat_tables([good.cast(job.arrow_schema), rejected])
