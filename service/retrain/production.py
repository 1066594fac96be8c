"""The production rows a challenger may learn from: logged inputs that received ground truth.

Walks the prediction log of one model backwards from the newest batch record, a bounded number
of rows at a time, keeps only the rows with feedback, and stops at a row cap: memory is one
page of records plus the rows kept, however long the log. A row whose inputs the log did not
store (a ``pii`` feature, hashed or dropped; a required value missing; a record of another
schema) is counted and left out, and so is a label that is none of the model's classes. Reads
only: no lock a serving worker needs is held between pages. No Flask.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from service.models.artifacts import NUMERIC_TYPES
from service.monitoring.log_window import read_batches, read_labels
from service.monitoring.privacy import pii_names
from service.monitoring.window_columns import feature_column, sparse
from service.retrain.labels import as_target, plain
from service.store import Store
from service.store.records import ids_of

#: Batch records listed per index query while walking back.
PAGE = 500
#: Logged rows whose columns are read at a time (a record larger than this is read alone).
PAGE_ROWS = 20_000


@dataclass
class ProductionRows:
    """Labelled production rows, oldest first, and what was left out and why."""

    X: pd.DataFrame
    y: pd.Series
    ts: np.ndarray  # unix seconds each row was predicted
    ids: list[str]
    scanned: int = 0  # logged rows looked at
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows
    unstored: list[str] = field(default_factory=list)  # required features the log never stores (pii)
    capped: bool = False  # the row cap was reached: older labelled rows may have been left out

    def fingerprint(self) -> dict[str, Any]:
        """Identify these rows by content and by prediction id, with their time span."""
        digest = hashlib.sha256()
        if len(self.X):
            digest.update(pd.util.hash_pandas_object(self.X, index=False).to_numpy().tobytes())
            digest.update(pd.util.hash_pandas_object(self.y.astype(str), index=False).to_numpy().tobytes())
        ids = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        return {"sha256": digest.hexdigest(), "ids_sha256": ids, "rows": len(self.X),
                "first_ts": float(self.ts.min()) if len(self.ts) else None,
                "last_ts": float(self.ts.max()) if len(self.ts) else None}


def read(store: Store, model: str, features: list[dict[str, Any]], task: str, classes: list[Any] | None, *,
         since: float, max_rows: int) -> ProductionRows:
    """Read up to ``max_rows`` of ``model``'s newest labelled rows predicted since ``since``."""
    names = [f["name"] for f in features]
    hidden = pii_names(features)
    # a pii feature is never stored raw (hashed or dropped): a row missing it would teach the model
    # a value it never sees in production, so such rows are left out even when the feature is optional
    needed = [f for f in features if f.get("required") or not f.get("nullable") or f["name"] in hidden]
    kept: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]] = []
    left_out = {"inputs_not_stored": 0, "unknown_label": 0}
    total = scanned = 0
    capped = False
    for group in _pages(store, model, since):
        stored = read_batches(store, [key for key, _, _ in group])
        parts, ids, ts = [], [], []
        for key, when, _ in group:
            found = stored.get(key)
            if found is None:  # purged or erased between the two reads
                continue
            record, base, positions = found
            parts.append(record)
            ids += ids_of(base, record.rows, positions)
            ts += [when] * record.rows
        scanned += len(ids)
        labels = sparse(read_labels(store, ids), len(ids))
        labelled = np.flatnonzero(np.array([v is not None for v in labels], dtype=bool))
        if not len(labelled):
            continue
        columns = {f["name"]: feature_column(f, parts, labelled, f["name"] in hidden) for f in features}
        target, usable = as_target(labels[labelled], task, classes)
        left_out["unknown_label"] += int((~usable).sum())
        stored_ok = np.ones(len(labelled), dtype=bool)
        for feature in needed:
            stored_ok &= ~_missing(columns[feature["name"]], feature)
        left_out["inputs_not_stored"] += int((usable & ~stored_ok).sum())
        keep = np.flatnonzero(usable & stored_ok)
        room = max_rows - total
        if len(keep) > room:
            keep, capped = keep[:room], True  # rows are newest first within a page
        kept.append(({n: columns[n][keep] for n in names}, target[keep], np.asarray(ts)[labelled][keep],
                     [ids[i] for i in labelled[keep]]))
        total += len(keep)
        if total >= max_rows:
            capped = True
            break
    found = _assemble(kept, names, scanned, left_out, capped)
    found.unstored = sorted(f["name"] for f in needed if f["name"] in hidden)
    return found


def _pages(store: Store, model: str, since: float):
    """Yield lists of (batch key, ts, rows), newest first, of at most ``PAGE_ROWS`` rows each."""
    sql = ("SELECT batch, ts, rows FROM prediction_batches WHERE model = ? AND ts >= ?"
           " AND (ts < ? OR (ts = ? AND batch < ?)) ORDER BY ts DESC, batch DESC LIMIT ?")
    after: tuple[float, int] = (float("inf"), 2**62)
    group: list[tuple[int, float, int]] = []
    rows = 0
    while True:
        page = store.fetch(sql, (model, float(since), after[0], after[0], after[1], PAGE))
        for key, ts, n in page:
            if group and rows + n > PAGE_ROWS:
                yield group
                group, rows = [], 0
            group.append((key, ts, n))
            rows += n
        if len(page) < PAGE:
            break
        after = (page[-1][1], page[-1][0])
    if group:
        yield group



def _missing(column: np.ndarray, feature: dict[str, Any]) -> np.ndarray:
    if feature.get("type") in NUMERIC_TYPES:
        return np.isnan(column.astype(np.float64))
    return np.array([v is None for v in column], dtype=bool)


def _assemble(kept: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]], names: list[str],
              scanned: int, left_out: dict[str, int], capped: bool) -> ProductionRows:
    ts = np.concatenate([part[2] for part in kept]) if kept else np.empty(0)
    order = np.argsort(ts, kind="stable")  # oldest first: the time split takes the tail
    X = pd.DataFrame({n: np.concatenate([part[0][n] for part in kept]) if kept else [] for n in names})
    y = np.concatenate([part[1] for part in kept]) if kept else np.empty(0, dtype=object)
    ids = [i for part in kept for i in part[3]]
    return ProductionRows(X.iloc[order].reset_index(drop=True), pd.Series(plain(y[order])), ts[order],
                          [ids[i] for i in order], scanned=scanned, left_out=left_out, capped=capped)

