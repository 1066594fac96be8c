"""Score one chunk of rows: validate, predict, check the answer, build the output rows and rejects.

The command line (``service.batch.run``) and the Spark entry point (``service.batch.spark``) both
call ``score_chunk``, so a row gets the same validation, prediction, output columns and reject
details whichever of them reads it. Rows are numbered by the chunk (``Chunk.positions``): the
input's row index for a file, a row column for a Spark DataFrame. No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.batch import rows
from service.batch.reading import Chunk
from service.errors import InputOutOfDomain, ValidationFailed
from service.serving.inference import check_output
from service.serving.runtime import LoadedModel, Prediction

#: Rows handed to the model at a time: a chunk is predicted in slices, so the model's own working memory
#: (ONNX Runtime's arena keeps what its largest call needed) stays that of a slice, whatever ``--chunk-rows``.
PREDICT_ROWS = 16_384
#: Names the output gives its own columns; a key column may not take one.
PREDICTION, PREDICTION_ID, MODEL, VERSION, PROBABILITY = "prediction", "prediction_id", "model", "version", "probability_"
#: Runs of positions with as many digits up to which ``prediction_ids`` builds ids as blocks of bytes.
ID_RUNS = 16


@dataclass(frozen=True)
class Scored:
    """One chunk after scoring: its output table, its rejects, and the good rows' inputs and answers."""

    table: pa.Table
    rejects: list[tuple[int, ValidationFailed]]  # (position in the chunk, the API's 422 for that row)
    positions: np.ndarray  # the scored rows' numbers
    columns: dict[str, np.ndarray]  # the scored rows' feature columns
    result: Prediction | None


def score_chunk(chunk: Chunk, model: LoadedModel, schema: Any, allowed: frozenset[str], keep: tuple[str, ...],
                probabilities: bool, run_id: str | None) -> Scored:
    """Validate and predict one chunk; a row that fails validation, or whose out-of-domain inputs give a
    non-finite answer, is rejected with the API's 422 for it; the others become output rows (without a
    ``run_id``, in a part's form: see ``output_table``)."""
    checked = rows.check_chunk(schema, chunk, allowed)
    good, columns, rejects = checked.good, checked.columns, list(checked.rejects)
    result = None
    if len(good):
        result, dropped = _predict(model, columns, probabilities, chunk.positions(good), checked.block)
        if dropped:
            rejects = sorted(rejects + [(int(good[i]), error) for i, error in dropped], key=lambda item: item[0])
            kept = np.setdiff1d(np.arange(len(good)), [i for i, _ in dropped])
            good, columns = good[kept], {name: values[kept] for name, values in columns.items()}
            result = Prediction(result.predictions[kept], None if result.probabilities is None
                                else result.probabilities[kept], result.classes)
    positions = chunk.positions(good)
    table = output_table(chunk, good, positions, result, model, keep, probabilities, run_id)
    return Scored(table, rejects, positions, columns, result)


def _predict(model: LoadedModel, columns: dict[str, np.ndarray], probabilities: bool, positions: np.ndarray,
             block: np.ndarray | None = None) -> tuple[Prediction, list[tuple[int, ValidationFailed]]]:
    """Predict, and check the answer as the API does: a row whose inputs are far outside the training
    data and whose answer is not finite is rejected with the API's 422 for it; any other non-finite
    answer is the model's failure and stops the run (``ModelOutputInvalid``)."""
    result = _predict_slices(model, columns, probabilities, block)
    try:
        return check_output(model, result, columns), []
    except InputOutOfDomain:
        pass
    dropped = []
    for i in _non_finite_rows(result).tolist():
        one = Prediction(result.predictions[i:i + 1], None if result.probabilities is None
                         else result.probabilities[i:i + 1], result.classes)
        try:
            check_output(model, one, {name: values[i:i + 1] for name, values in columns.items()})
        except InputOutOfDomain as exc:
            row = int(positions[i])
            exc.details["row_positions"] = [row]
            for entry in exc.details.get("errors", []):
                entry["row"] = row
            dropped.append((i, exc))
    return result, dropped


def _predict_slices(model: LoadedModel, columns: dict[str, np.ndarray], probabilities: bool,
                    block: np.ndarray | None) -> Prediction:
    n = len(next(iter(columns.values())))
    if n <= PREDICT_ROWS:
        return model.predict(columns, probabilities, block)
    parts = [model.predict({name: values[start:start + PREDICT_ROWS] for name, values in columns.items()},
                           probabilities, None if block is None else block[:, start:start + PREDICT_ROWS])
             for start in range(0, n, PREDICT_ROWS)]
    return Prediction(np.concatenate([part.predictions for part in parts]),
                      None if parts[0].probabilities is None else np.concatenate([part.probabilities for part in parts]),
                      parts[0].classes)


def _non_finite_rows(result: Prediction) -> np.ndarray:
    bad = np.zeros(len(result.predictions), dtype=bool)
    for values in (result.predictions, result.probabilities):
        if values is not None and np.asarray(values).dtype.kind == "f":
            finite = np.isfinite(values)
            bad |= ~(finite.all(axis=1) if finite.ndim > 1 else finite)
    return np.flatnonzero(bad)


def output_table(chunk: Chunk, good: np.ndarray, positions: np.ndarray, result: Prediction | None,
                 model: LoadedModel, keep: tuple[str, ...], probabilities: bool, run_id: str | None) -> pa.Table:
    """The output rows: the kept columns, the prediction (and probabilities), the id, the model and version.

    Without a ``run_id``, the rows as a Parquet output's part keeps them until the join (``complete``):
    the id column holds the row's position (8 bytes, not 40) and the model and version are left out,
    so a part is a fifth of the bytes to write and make durable.
    """
    columns = _scored_columns(chunk, good, result, model, keep, probabilities)
    columns[PREDICTION_ID] = pa.array(positions, pa.int64())
    part = pa.table(columns)
    return part if run_id is None else complete(part, run_id=run_id, model=model.name, version=model.version)


def complete(table: pa.Table, *, run_id: str, model: str, version: int) -> pa.Table:
    """Give rows in a part's form (``output_table`` without a run id) their ids, model and version."""
    at = table.schema.get_field_index(PREDICTION_ID)
    positions = table.column(at).combine_chunks().to_numpy() if table.num_rows else np.empty(0, dtype=np.int64)
    n = table.num_rows
    table = table.set_column(at, PREDICTION_ID, prediction_ids(run_id, positions))
    return table.append_column(MODEL, pa.repeat(pa.scalar(model), n)).append_column(
        VERSION, pa.repeat(pa.scalar(version, pa.int64()), n))


def _scored_columns(chunk: Chunk, good: np.ndarray, result: Prediction | None, model: LoadedModel,
                    keep: tuple[str, ...], probabilities: bool) -> dict[str, Any]:
    columns: dict[str, Any] = {key: _kept(chunk, key, good) for key in keep}
    columns[PREDICTION] = _predictions(result.predictions) if result is not None else pa.array([], prediction_type(model))
    if probabilities:
        for j, label in enumerate(model.classes or []):
            columns[f"{PROBABILITY}{label}"] = pa.array(result.probabilities[:, j] if result is not None else [],
                                                        pa.float64())
    return columns


def _predictions(values: np.ndarray) -> pa.Array:
    # integer classes as int64 whatever their width: the type an empty chunk's column has (prediction_type)
    return pa.array(values, pa.int64()) if values.dtype.kind in "iu" else pa.array(values)


def prediction_ids(run_id: str, positions: np.ndarray) -> pa.Array:
    """``<run id>-<position>`` for each position, as an Arrow string array.

    Built as bytes: the positions' digits (pyarrow's cast) behind the same prefix, one block of
    fixed-width ids per run of positions with as many digits; ascending positions (a file's) make
    one or two such runs per chunk. Many runs (a Spark row column in any order) are joined by
    pyarrow instead, which is ten times slower on a million rows.
    """
    digits = pc.cast(pa.array(positions, pa.int64()), pa.string())
    if len(digits) == 0:
        return digits
    offsets = np.frombuffer(digits.buffers()[1], dtype=np.int32, count=len(digits) + 1, offset=4 * digits.offset)
    widths = np.diff(offsets)
    starts = [0, *(np.flatnonzero(np.diff(widths)) + 1).tolist(), len(widths)]
    if len(starts) > ID_RUNS:
        return pc.binary_join_element_wise(pa.scalar(run_id), digits, "-")
    prefix = np.frombuffer(f"{run_id}-".encode(), dtype=np.uint8)
    data = np.frombuffer(digits.buffers()[2], dtype=np.uint8)
    pieces = []
    for a, b in zip(starts, starts[1:], strict=False):
        rows, width = b - a, int(widths[a])
        ids = np.empty((rows, len(prefix) + width), dtype=np.uint8)
        ids[:, :len(prefix)] = prefix
        ids[:, len(prefix):] = data[offsets[a]:offsets[b]].reshape(rows, width)
        pieces.append(pa.StringArray.from_buffers(rows, pa.py_buffer(np.arange(rows + 1, dtype=np.int32) * ids.shape[1]),
                                                  pa.py_buffer(ids)))
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def prediction_type(model: LoadedModel) -> pa.DataType:
    """The prediction column's type for a chunk with no scored row, so every part has one schema."""
    classes = model.classes
    if classes is None:
        return pa.float64()
    return pa.int64() if all(isinstance(c, int) and not isinstance(c, bool) for c in classes) else pa.string()


def _kept(chunk: Chunk, key: str, good: np.ndarray) -> pa.Array:
    if chunk.table is not None:
        return chunk.table.column(key).take(pa.array(good, pa.int64())).combine_chunks()
    values = [(chunk.records[i] or {}).get(key) for i in good.tolist()]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across lines: text holds them all
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def reject_line(chunk: Chunk, i: int, error: ValidationFailed, keep: tuple[str, ...]) -> dict[str, Any]:
    """A rejected row as the rejects file holds it: its number, its kept columns and the API's error."""
    if chunk.table is not None:
        kept = {key: chunk.table.column(key)[i].as_py() for key in keep}
    else:
        kept = {key: (chunk.records[i] or {}).get(key) for key in keep}
    return {"row": int(chunk.positions(np.array([i]))[0]), "keep": kept, **error.to_dict()}
