"""Read a window of the prediction log back: a version's newest predictions, expanded from batch records.

The log keeps one record per batch (``prediction_batches``); a window reads the newest records'
sizes from the index first, then the columns of only the records that cover the rows wanted
(numeric ones as arrays over the stored bytes, others and older records' as JSON lists), and
joins the rows' feedback. The result is the *window* shape the monitoring maths takes (see
``service.monitoring``). No Flask; only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.monitoring.privacy import pii_names
from service.monitoring.window_columns import (
    Stored,
    as_array,
    block_columns,
    feature_column,
    gather,
    probability_matrix,
    sparse,
)
from service.store import MAX_PARAMS, Store, chunks
from service.store.columns import read_block, read_column, read_inputs
from service.store.records import ids_of

#: The most predictions one window reads, whatever its size in minutes.
MAX_WINDOW_ROWS = 100_000
#: Batch sizes read per query while walking back to cover a window.
PAGE = 500


@dataclass(frozen=True)
class Window:
    """One model version's recent predictions, newest first, joined with their feedback."""

    columns: dict[str, np.ndarray]  # feature -> float64 (NaN missing) or object (None missing)
    predictions: np.ndarray
    probabilities: np.ndarray | None  # n x k in class order; NaN rows where none was recorded
    labels: np.ndarray  # object array, None where no feedback arrived
    ts: np.ndarray  # unix seconds, float64
    ids: list[str]
    n: int
    redacted: frozenset[str]  # features whose columns are all missing because they are PII


@dataclass(frozen=True)
class Loaded:
    """A window's records before its columns are assembled: enough to tell whether it changed."""

    covering: tuple[tuple[int, float, int, int], ...]  # (record key, ts, rows taken, rows stored), newest first
    parts: list[Stored]
    index: np.ndarray  # each row's position in the concatenated parts
    ids: list[str]
    ts: list[float]
    labels: list[str | None]  # each row's feedback label (JSON text)

    @property
    def content(self) -> tuple[Any, ...]:
        """What the window's figures depend on: the records taken (a rewrite by erasure changes their
        rows, a deletion their list) and the labels joined to them."""
        return self.covering, tuple(self.labels)


def read(store: Store, model: str, version: int | None, *, last_n: int | None, since: float | None,
         features: list[dict[str, Any]]) -> Window:
    """Read a version's predictions (all versions for None), newest first, with their labels."""
    return assemble(load(store, model, version, last_n=last_n, since=since), features)


def load(store: Store, model: str, version: int | None, *, last_n: int | None, since: float | None,
         decoded: dict[tuple[int, int], tuple[Stored, str, list[int] | None]] | None = None) -> Loaded:
    """Read the records covering a window and the labels of its rows.

    ``decoded``, kept by the caller between two loads of one window, holds the records already
    read, keyed by (record key, rows): only records new since then are read and decoded (a record
    is immutable but for erasure, which changes its rows). It is left holding this window's records.
    """
    wanted = max(int(last_n), 0) if last_n is not None else MAX_WINDOW_ROWS
    covering = _covering(store, model, version, since, min(wanted, MAX_WINDOW_ROWS))
    known = decoded if decoded is not None else {}
    missing = [key for key, _, _, rows in covering if (key, rows) not in known]
    stored = {key: known[(key, rows)] for key, _, _, rows in covering if (key, rows) in known}
    stored.update(read_batches(store, missing))
    if decoded is not None:
        decoded.clear()
        decoded.update({(key, found[0].rows): found for key, found in stored.items()})
    ids: list[str] = []
    ts: list[float] = []
    index: list[int] = []
    offset = 0
    parts = []
    for key, when, take, _ in covering:
        found = stored.get(key)
        if found is None:  # deleted (purged, erased) between the two reads
            continue
        record, base, positions = found
        row_ids = ids_of(base, record.rows, positions)
        rows = list(range(record.rows - 1, record.rows - 1 - min(take, record.rows), -1))  # newest first: last row first
        ids += [row_ids[k] for k in rows]
        index += [offset + k for k in rows]
        ts += [when] * len(rows)
        offset += record.rows
        parts.append(record)
    return Loaded(tuple(covering), parts, np.array(index, dtype=np.int64), ids, ts, read_labels(store, ids))


def assemble(loaded: Loaded, features: list[dict[str, Any]]) -> Window:
    """The window's columns, predictions, probabilities and labels as the monitoring maths takes them."""
    parts, positions_index, n = loaded.parts, loaded.index, len(loaded.ids)
    hidden = pii_names(features)
    at_once = block_columns(features, parts, positions_index, hidden) or {}
    return Window(
        columns={f["name"]: at_once[f["name"]] if f["name"] in at_once
                 else feature_column(f, parts, positions_index, f["name"] in hidden) for f in features},
        predictions=as_array(gather([p.outputs for p in parts], positions_index)),
        probabilities=probability_matrix(gather([p.probabilities for p in parts], positions_index, matrix=True)),
        labels=sparse(loaded.labels, n),
        ts=np.array(loaded.ts, dtype=np.float64),
        ids=loaded.ids,
        n=n,
        redacted=hidden,
    )


def _covering(store: Store, model: str, version: int | None, since: float | None,
              wanted: int) -> list[tuple[int, float, int, int]]:
    """The newest batch records holding ``wanted`` rows: (key, ts, rows to take, rows), newest first."""
    where = "model = ?" + (" AND version = ?" if version is not None else "") + (" AND ts >= ?" if since is not None else "")
    params: list[Any] = [model, *([int(version)] if version is not None else []),
                         *([float(since)] if since is not None else [])]
    # From the (model, version, ts, rows) index alone: the columns are read only for the records kept.
    sql = (f"SELECT batch, ts, rows FROM prediction_batches WHERE {where} AND (ts < ? OR (ts = ? AND batch < ?))"  # nosec B608  # noqa: S608  constants and "?" only
           " ORDER BY ts DESC, batch DESC LIMIT ?")
    out: list[tuple[int, float, int, int]] = []
    covered = 0
    after: tuple[float, int] = (float("inf"), 2**62)
    while covered < wanted:
        page = store.fetch(sql, (*params, after[0], after[0], after[1], PAGE))
        for key, ts, rows in page:
            if rows:
                take = min(rows, wanted - covered)
                out.append((key, ts, take, rows))
                covered += take
            if covered >= wanted:
                break
        if len(page) < PAGE:
            break
        after = (page[-1][1], page[-1][0])
    return out


def read_batches(store: Store, keys: list[int]) -> dict[int, tuple[Stored, str, list[int] | None]]:
    """Read the columns of some batch records, each once."""
    stored = {}
    for chunk in chunks(keys, MAX_PARAMS):
        sql = ("SELECT batch, rows, base, positions, features, inputs, outputs, probabilities, arrays, arrays_ref"  # nosec B608  # noqa: S608  only "?" marks
               f" FROM prediction_batches WHERE batch IN ({', '.join('?' * len(chunk))})")
        for key, rows, base, positions, names, inputs, outputs, probas, arrays, ref in store.fetch(sql, tuple(chunk)):
            arrays = store.arrays_of(arrays, ref)
            outputs = read_column(outputs, arrays)
            probas = read_column(probas, arrays)
            names = tuple(orjson.loads(names))
            block = read_block(inputs, arrays)
            if block is not None and len(block) != len(names):  # not one row per feature: read as columns
                block = None
            columns = list(block) if block is not None else read_inputs(inputs, arrays)
            record = Stored(rows, dict(zip(names, columns, strict=True)),
                            outputs if outputs is not None and len(outputs) == rows else [None] * rows,
                            probas if probas is not None and len(probas) == rows else [None] * rows,
                            block, names)
            stored[key] = (record, base, None if positions is None else orjson.loads(positions))
    return stored


def read_labels(store: Store, ids: list[str]) -> list[str | None]:
    """Each id's feedback label (JSON text), or None."""
    found: dict[str, str] = {}
    for chunk in chunks(ids, MAX_PARAMS):
        sql = f"SELECT id, label FROM feedback WHERE id IN ({', '.join('?' * len(chunk))})"  # nosec B608  # noqa: S608  only "?" marks
        found.update(store.fetch(sql, tuple(chunk)))
    return [found.get(pid) for pid in ids]
