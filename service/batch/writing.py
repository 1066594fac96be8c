"""Write a run's output and rejects: one part file per chunk, joined into the final files at the end.

A chunk's part is written whole (a temporary name, fsync, rename) before the state file says
the chunk is done, so a run killed at any moment leaves only whole parts, and a part past the
state's count (written, not yet counted) is simply written again on resume. Parquet cannot be
appended to, which is why parts exist at all; CSV and JSON Lines parts are joined byte for byte.
A Parquet output's parts are Arrow IPC files, joined through one ``ParquetWriter`` (a part at a
time, memory-mapped): the rows are encoded as Parquet once, at the join, not twice. Rejects are JSON
Lines whatever the output format: their details are nested. No Flask.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

PART = "part-{index:06d}.{ext}"
REJECTS_PART = "rejects-{index:06d}.jsonl"
EXTENSIONS = {"csv": "csv", "parquet": "arrow", "jsonl": "jsonl"}
#: Columns whose every value differs: Parquet's dictionary encoding would be built, then thrown away.
UNIQUE = ("prediction_id",)


def write_part(folder: Path, index: int, table: pa.Table, fmt: str) -> None:
    """Write one chunk's output rows as part ``index``, atomically."""
    path = folder / PART.format(index=index, ext=EXTENSIONS[fmt])
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    elif fmt == "csv":
        pa_csv.write_csv(table, tmp, pa_csv.WriteOptions(include_header=index == 0))
    else:
        with open(tmp, "wb") as fh:
            for row in _json_rows(table):
                fh.write(row)
    _settle(tmp, path)


def write_rejects(folder: Path, index: int, lines: list[dict[str, Any]]) -> None:
    """Write one chunk's rejected rows (JSON objects) as a rejects part, atomically."""
    path = folder / REJECTS_PART.format(index=index)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.writelines(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE) for line in lines)
    _settle(tmp, path)


def drop_parts_from(folder: Path, index: int) -> None:
    """Delete parts of chunks ``index`` and later: written by an interrupted run, never counted."""
    for path in folder.iterdir():
        number = _part_number(path)
        if (number is not None and number >= index) or path.name.endswith(".tmp"):
            path.unlink()


def join_output(folder: Path, fmt: str, chunks: int, target: Path,
                complete: Callable[[pa.Table], pa.Table] | None = None) -> None:
    """Join the output parts of chunks 0..chunks-1 into ``target`` (written aside, then renamed); a Parquet
    output's parts pass through ``complete`` on the way (what a part leaves out: ``scoring.complete``)."""
    parts = [folder / PART.format(index=i, ext=EXTENSIONS[fmt]) for i in range(chunks)]
    tmp = target.with_name(f".{target.name}.tmp")
    if fmt == "parquet":
        finish = complete or (lambda table: table)
        schema = _joined_schema(parts)
        final = finish(schema.empty_table()).schema
        with pq.ParquetWriter(tmp, final, use_dictionary=[name for name in final.names if name not in UNIQUE]) as writer:
            for part in parts:
                with pa.memory_map(str(part)) as source:
                    writer.write_table(finish(_conform(pa.ipc.open_file(source).read_all(), schema)))
    else:
        _concatenate(parts, tmp)
    _settle(tmp, target)


def join_rejects(folder: Path, chunks: int, target: Path) -> None:
    """Join the rejects parts of chunks 0..chunks-1 into ``target`` (an empty file when none)."""
    parts = [path for i in range(chunks) if (path := folder / REJECTS_PART.format(index=i)).exists()]
    tmp = target.with_name(f".{target.name}.tmp")
    _concatenate(parts, tmp)
    _settle(tmp, target)


def _concatenate(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)


def _joined_schema(parts: list[Path]) -> pa.Schema:
    """One schema for every part: a key column typed differently in two chunks (JSON Lines) is widened,
    or written as text when no type holds both."""
    schemas = []
    for part in parts:
        with pa.memory_map(str(part)) as source:
            schemas.append(pa.ipc.open_file(source).schema)
    if not schemas:
        return pa.schema([])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fields = []
        for field in schemas[0]:
            kinds = {schema.field(field.name).type for schema in schemas}
            fields.append(field if len(kinds) == 1 else pa.field(field.name, pa.string()))
        return pa.schema(fields)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
        column = table.column(field.name)
        if column.type != field.type:
            column = column.cast(field.type, safe=False) if field.type != pa.string() or pa.types.is_null(
                column.type) else pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _json_rows(table: pa.Table) -> Iterator[bytes]:
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            yield orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)


def _settle(tmp: Path, path: Path) -> None:
    """Make ``tmp`` durable, then give it its name: readers see the whole file or none."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _part_number(path: Path) -> int | None:
    stem = path.name.split(".", 1)[0]
    prefix, _, number = stem.rpartition("-")
    return int(number) if prefix in ("part", "rejects") and number.isdigit() else None
