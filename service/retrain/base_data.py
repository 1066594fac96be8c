"""The base training data: a CSV or Parquet file read in chunks and checked as the API checks a request.

Reuses the batch scorer's reader (``service.batch.reading``) and row checks
(``service.batch.rows``) with the champion's input schema, so a row the server would refuse is
refused here too: counted and left out, never fitted on. The target column is read alongside and
mapped onto the model's classes (or read as a number for a regressor). Memory is one chunk plus
the rows kept, up to a row cap. No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.batch import reading, rows
from service.retrain.labels import as_target, plain
from service.serving.schemas import model_schema

CHUNK_ROWS = 50_000


@dataclass
class BaseRows:
    """The base rows kept, in file order, and how many were left out and why."""

    X: pd.DataFrame
    y: pd.Series
    read: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    capped: bool = False


def read(path: Path, target: str, features: list[dict[str, Any]], task: str, classes: list[Any] | None, *,
         max_rows: int, chunk_rows: int = CHUNK_ROWS) -> BaseRows:
    """Read ``path`` (CSV or Parquet, by extension): the features the schema names and ``target``."""
    fmt = reading.format_of(path, None)
    if fmt == "jsonl":
        raise ValueError(f"--train {path.name}: give a CSV or Parquet file")
    source = reading.Input(path, fmt)
    if target not in (source.columns or ()):
        raise ValueError(f"--train {path.name} has no column {target!r} (the target; name it with --target)")
    schema = model_schema(features)
    missing = rows.missing_columns(schema, source.columns or [])
    if missing:
        raise ValueError(f"--train {path.name} lacks columns the model needs: {', '.join(missing)}")
    names = list(schema.names)
    parts: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    left_out = {"invalid_row": 0, "missing_or_unknown_target": 0}
    total = seen = 0
    capped = False
    for chunk in source.chunks(chunk_rows, [*names, target]):
        seen += chunk.n_rows
        checked = rows.check_chunk(schema, chunk, frozenset())
        left_out["invalid_row"] += len(checked.rejects)
        raw = np.asarray(chunk.table.column(target).to_pylist(), dtype=object)[checked.good]
        values, usable = as_target(raw, task, classes)
        left_out["missing_or_unknown_target"] += int((~usable).sum())
        keep = np.flatnonzero(usable)[: max_rows - total]
        if len(keep) < int(usable.sum()):
            capped = True
        parts.append(({n: np.asarray(checked.columns[n])[keep] for n in names}, values[keep]))
        total += len(keep)
        if total >= max_rows:
            capped = capped or chunk.start + chunk.n_rows < (source.total_rows or float("inf"))
            break
    X = pd.DataFrame({n: np.concatenate([p[0][n] for p in parts]) if parts else [] for n in names})
    y = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
    return BaseRows(X, pd.Series(plain(y)), seen, left_out, capped)


