"""Retention: delete what is older than a cut-off, or past the log's size cap, in short batches.

Each batch is its own transaction, so serving writes interleave with a long purge. ``make purge``
and ``python -m service purge`` call ``purge`` through ``Store.purge``; the retention loop
(``service.monitoring.retention_loop``) calls it and ``trim_log`` on its own. The cap policy:
past ``max_rows`` predictions the oldest batches go (predictions, their feedback and inputs)
until ``CAP_LOW_WATER`` of the cap is left; nothing is sampled down and nothing waits on it.
"""

from __future__ import annotations

import time

from service.store import MAX_PARAMS, PURGE_BATCH, Store, chunks

#: After trimming to the cap, this share of it is left: room for new rows before the next trim.
CAP_LOW_WATER = 0.9


def purge(store: Store, older_than_seconds: float, now: float | None = None, batch: int = PURGE_BATCH) -> dict[str, int]:
    """Delete rows older than the cut-off in short batches; return the count deleted per table.

    Feedback goes with its prediction, and the inputs of a batch (``prediction_batches``)
    with its predictions: they share its timestamp. Each batch is its own transaction, so serving writes
    interleave with a long purge; freed pages are reused by SQLite (no ``VACUUM``, which
    would lock the file). Raises ``sqlite3.Error`` if a batch cannot be written.
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    counts = purge_log(store, cutoff, batch)
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
    """Delete the prediction log's rows (predictions, their feedback, their batches) logged before
    ``cutoff`` (unix seconds), in short transactions; return the count per table."""
    counts = {"predictions": 0, "feedback": 0, "prediction_batches": 0}
    for model in _distinct_models(store, "predictions"):
        for version in _distinct_versions(store, model):
            while True:
                deleted, labels = _purge_predictions(store, model, version, cutoff, batch)
                counts["predictions"] += deleted
                counts["feedback"] += labels
                if deleted < batch:
                    break
    while deleted := _purge_batches(store, cutoff, batch):
        counts["prediction_batches"] += deleted
    return counts


def _purge_batches(store: Store, cutoff: float, batch: int) -> int:
    """Delete the oldest batches before ``cutoff`` holding about ``batch`` rows in all, in one transaction:
    bounded by rows, not batches, since one batch may hold 10,000 rows of inputs."""
    with store.transaction() as db:
        found = db.execute("SELECT batch, rows FROM prediction_batches WHERE ts < ? ORDER BY ts LIMIT ?",
                           (cutoff, batch)).fetchall()
        keys, total = [], 0
        for key, rows in found:
            keys.append(key)
            total += rows
            if total >= batch:
                break
        db.executemany("DELETE FROM prediction_batches WHERE batch = ?", [(key,) for key in keys])
    return len(keys)


def log_rows_bound(store: Store) -> int:
    """Return an upper bound of the rows in ``predictions`` at the cost of two index seeks.

    Row ids only grow (SQLite's rowid is the largest plus one; PostgreSQL's identity skips at
    most), so the span between the smallest and the largest counts every row and any gap left
    by deletions in the middle. A COUNT(*) reads the whole table (see ``count_log_rows``).
    """
    # Two statements: SQLite answers a lone MIN or MAX from the index, but both in one SELECT by a scan.
    low = store.fetch("SELECT MIN(rowid) FROM predictions")[0][0]
    high = store.fetch("SELECT MAX(rowid) FROM predictions")[0][0]
    return 0 if low is None or high is None else max(int(high) - int(low) + 1, 0)


def count_log_rows(store: Store) -> int:
    """Return the exact number of rows in ``predictions`` (a full scan of its smallest index)."""
    return int(store.fetch("SELECT COUNT(*) FROM predictions")[0][0])


def trim_log(store: Store, max_rows: int, low_water: float = CAP_LOW_WATER,
             batch: int = PURGE_BATCH) -> dict[str, int]:
    """Keep the prediction log under ``max_rows``: when over it, delete the oldest batches (with
    their predictions and feedback) until at most ``low_water`` of the cap is left.

    The cheap bound is checked first; the exact count only when the bound is over the cap.
    Returns the count deleted per table (all zero when under the cap).
    """
    counts = {"predictions": 0, "feedback": 0, "prediction_batches": 0}
    if max_rows <= 0 or log_rows_bound(store) <= max_rows:
        return counts
    rows = count_log_rows(store)
    if rows <= max_rows:
        return counts
    cutoff = _cutoff_for(store, rows - int(max_rows * low_water))
    return purge_log(store, cutoff, batch)


def _cutoff_for(store: Store, excess: int, page: int = 5000) -> float:
    """The timestamp before which at least ``excess`` logged predictions lie, walking batches oldest first.

    Never past the newest batch: rows without a batch (the previous layout) are left to the age limit.
    """
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


def _purge_predictions(store: Store, model: str, version: int, cutoff: float, batch: int) -> tuple[int, int]:
    with store.transaction() as db:
        rows = db.execute("SELECT rowid, id FROM predictions WHERE model = ? AND version = ? AND ts < ? LIMIT ?",
                          (model, version, cutoff, batch)).fetchall()
        labels = 0
        for chunk in chunks([r[1] for r in rows], MAX_PARAMS):
            labels += db.execute(f"DELETE FROM feedback WHERE id IN ({', '.join('?' * len(chunk))})", chunk).rowcount  # nosec B608  # noqa: S608  only "?" marks
        db.executemany("DELETE FROM predictions WHERE rowid = ?", [(r[0],) for r in rows])
    return len(rows), labels

def _distinct_models(store: Store, table: str) -> list[str]:
    # A skip-scan over the (model, ...) index: one index seek per model, not a table scan.
    models: list[str] = []
    while (row := store.query(f"SELECT MIN(model) FROM {table} WHERE model > ?", (models[-1] if models else "",))[0])[0]:  # nosec B608  # noqa: S608  our table names
        models.append(row[0])
    return models

def _distinct_versions(store: Store, model: str) -> list[int]:
    versions: list[int] = []
    sql = "SELECT MIN(version) FROM predictions WHERE model = ? AND version > ?"
    while (row := store.query(sql, (model, versions[-1] if versions else -(2**63)))[0])[0] is not None:
        versions.append(row[0])
    return versions
