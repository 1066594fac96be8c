"""Retention: delete what is older than a cut-off, or past the log's size cap, in short batches.

Each batch is its own transaction, so serving writes interleave with a long purge. ``make purge``
and ``python -m service purge`` call ``purge`` through ``Store.purge``; the retention loop
(``service.monitoring.retention_loop``) calls it and ``trim_log`` on its own. The cap policy:
past ``max_rows`` predictions (the rows of the batch records, summed) the oldest records go, with
their rows' feedback, until ``CAP_LOW_WATER`` of the cap is left; nothing is sampled down and
nothing waits on it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from service.store import MAX_PARAMS, PURGE_BATCH, Store, chunks
from service.store.records import ids_of

#: After trimming to the cap, this share of it is left: room for new rows before the next trim.
CAP_LOW_WATER = 0.9


def purge(store: Store, older_than_seconds: float, now: float | None = None, batch: int = PURGE_BATCH) -> dict[str, int]:
    """Delete rows older than the cut-off in short batches; return the count deleted per table.

    Feedback goes with its prediction, and a prediction with its batch record
    (``prediction_batches``): they share its timestamp. Each batch is its own transaction, so serving writes
    interleave with a long purge; freed pages are reused by SQLite (no ``VACUUM``, which
    would lock the file). Raises ``sqlite3.Error`` if a batch cannot be written.
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    counts = purge_log(store, cutoff, batch)
    if store.blobs is not None:  # an hour's blob file once every record of that hour is gone
        store.blobs.purge(cutoff)
    counts.update(requests=0, shadow=0)
    for table in ("requests", "shadow"):
        sql = (f"DELETE FROM {table} WHERE rowid IN "  # nosec B608  # noqa: S608  table from the constant tuple above
               f"(SELECT rowid FROM {table} WHERE model = ? AND ts < ? LIMIT ?)")
        for model in _distinct_models(store, table):
            while True:
                with store.transaction() as db:
                    deleted = db.execute(sql, (model, cutoff, batch)).rowcount
                counts[table] += deleted
                if deleted < batch:
                    break
    return counts


def purge_log(store: Store, cutoff: float, batch: int = PURGE_BATCH) -> dict[str, int]:
    """Delete the prediction log's batch records logged before ``cutoff`` (unix seconds) and their rows'
    feedback, in short transactions; return the count per table (``predictions``: their rows)."""
    counts = {"predictions": 0, "feedback": 0, "prediction_batches": 0}
    while True:
        records, rows, labels = _purge_batches(store, cutoff, batch)
        counts["prediction_batches"] += records
        counts["predictions"] += rows
        counts["feedback"] += labels
        if not records:
            return counts


def _purge_batches(store: Store, cutoff: float, batch: int) -> tuple[int, int, int]:
    """Delete the oldest records before ``cutoff`` holding about ``batch`` rows in all, with their feedback,
    in one transaction: bounded by rows, not records, since one record may hold 10,000 rows."""
    with store.transaction() as db:
        found = db.execute("SELECT batch, rows FROM prediction_batches WHERE ts < ? ORDER BY ts LIMIT ?",
                           (cutoff, batch)).fetchall()
        keys, total = [], 0
        for key, rows in found:
            keys.append(key)
            total += rows
            if total >= batch:
                break
        labels = 0
        for chunk in chunks(keys, MAX_PARAMS):
            sql = f"SELECT base, rows, positions FROM prediction_batches WHERE batch IN ({', '.join('?' * len(chunk))})"  # nosec B608  # noqa: S608  only "?" marks
            ids = [pid for base, rows, positions in db.execute(sql, chunk).fetchall()
                   for pid in ids_of(base, rows, None if positions is None else orjson.loads(positions))]
            labels += _delete_feedback(db, ids)
        db.executemany("DELETE FROM prediction_batches WHERE batch = ?", [(key,) for key in keys])
    return len(keys), total, labels


def _delete_feedback(db: Any, ids: list[str]) -> int:
    deleted = 0
    for chunk in chunks(ids, MAX_PARAMS):
        deleted += db.execute(f"DELETE FROM feedback WHERE id IN ({', '.join('?' * len(chunk))})", chunk).rowcount  # nosec B608  # noqa: S608  only "?" marks
    return deleted


def count_log_rows(store: Store) -> int:
    """Return the rows of the prediction log: the batch records' sizes, summed from an index that holds them
    (one entry per batch, not per prediction)."""
    return int(store.fetch("SELECT SUM(rows) FROM prediction_batches")[0][0] or 0)


def trim_log(store: Store, max_rows: int, low_water: float = CAP_LOW_WATER,
             batch: int = PURGE_BATCH) -> dict[str, int]:
    """Keep the prediction log under ``max_rows``: when over it, delete the oldest batches (with
    their predictions and feedback) until at most ``low_water`` of the cap is left.

    Returns the count deleted per table (all zero when under the cap).
    """
    counts = {"predictions": 0, "feedback": 0, "prediction_batches": 0}
    rows = count_log_rows(store) if max_rows > 0 else 0
    if rows <= max_rows:
        return counts
    cutoff = _cutoff_for(store, rows - int(max_rows * low_water))
    counts = purge_log(store, cutoff, batch)
    if store.blobs is not None:  # the files no record still points at
        oldest = store.fetch("SELECT MIN(ts) FROM prediction_batches WHERE arrays_ref IS NOT NULL")[0][0]
        store.blobs.purge_unreferenced(None if oldest is None else float(oldest))
    return counts


def _cutoff_for(store: Store, excess: int, page: int = 5000) -> float:
    """The timestamp before which at least ``excess`` logged predictions lie, walking batches oldest first."""
    seen, last, after = 0, float("-inf"), float("-inf")
    while True:
        found = store.fetch("SELECT ts, rows FROM prediction_batches WHERE ts > ? ORDER BY ts LIMIT ?", (after, page))
        for ts, rows in found:
            if seen >= excess and ts > last:
                return ts  # every batch before this one goes
            seen += rows
            last = ts
        if len(found) < page:
            return last
        after = found[-1][0]


def _distinct_models(store: Store, table: str) -> list[str]:
    # A skip-scan over the (model, ...) index: one index seek per model, not a table scan.
    models: list[str] = []
    while (row := store.query(f"SELECT MIN(model) FROM {table} WHERE model > ?", (models[-1] if models else "",))[0])[0]:  # nosec B608  # noqa: S608  our table names
        models.append(row[0])
    return models
