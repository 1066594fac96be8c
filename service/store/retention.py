"""Retention: delete what is older than a cut-off, in short batches, from every table of the store.

Each batch is its own transaction, so serving writes interleave with a long purge. ``make purge``
and ``python -m service purge`` call it through ``Store.purge``.
"""

from __future__ import annotations

import time

from service.store import MAX_PARAMS, PURGE_BATCH, Store, chunks


def purge(store: Store, older_than_seconds: float, now: float | None = None, batch: int = PURGE_BATCH) -> dict[str, int]:
    """Delete rows older than the cut-off in short batches; return the count deleted per table.

    Feedback goes with its prediction, and the inputs of a batch (``prediction_batches``)
    with its predictions: they share its timestamp. Each batch is its own transaction, so serving writes
    interleave with a long purge; freed pages are reused by SQLite (no ``VACUUM``, which
    would lock the file). Raises ``sqlite3.Error`` if a batch cannot be written.
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    counts = {"predictions": 0, "feedback": 0, "prediction_batches": 0, "requests": 0, "shadow": 0}
    for model in _distinct_models(store, "predictions"):
        for version in _distinct_versions(store, model):
            while True:
                deleted, labels = _purge_predictions(store, model, version, cutoff, batch)
                counts["predictions"] += deleted
                counts["feedback"] += labels
                if deleted < batch:
                    break
    while True:
        with store.transaction() as db:
            deleted = db.execute("DELETE FROM prediction_batches WHERE batch IN "
                                 "(SELECT batch FROM prediction_batches WHERE ts < ? LIMIT ?)", (cutoff, batch)).rowcount
        counts["prediction_batches"] += deleted
        if deleted < batch:
            break
    for table in ("requests", "shadow"):
        sql = (f"DELETE FROM {table} WHERE rowid IN "
               f"(SELECT rowid FROM {table} WHERE model = ? AND ts < ? LIMIT ?)")
        for model in _distinct_models(store, table):
            while True:
                with store.transaction() as db:
                    deleted = db.execute(sql, (model, cutoff, batch)).rowcount
                counts[table] += deleted
                if deleted < batch:
                    break
    return counts

def _purge_predictions(store: Store, model: str, version: int, cutoff: float, batch: int) -> tuple[int, int]:
    with store.transaction() as db:
        rows = db.execute("SELECT rowid, id FROM predictions WHERE model = ? AND version = ? AND ts < ? LIMIT ?",
                          (model, version, cutoff, batch)).fetchall()
        labels = 0
        for chunk in chunks([r[1] for r in rows], MAX_PARAMS):
            labels += db.execute(f"DELETE FROM feedback WHERE id IN ({', '.join('?' * len(chunk))})", chunk).rowcount
        db.executemany("DELETE FROM predictions WHERE rowid = ?", [(r[0],) for r in rows])
    return len(rows), labels

def _distinct_models(store: Store, table: str) -> list[str]:
    # A skip-scan over the (model, ...) index: one index seek per model, not a table scan.
    models: list[str] = []
    while (row := store.query(f"SELECT MIN(model) FROM {table} WHERE model > ?", (models[-1] if models else "",))[0])[0]:
        models.append(row[0])
    return models

def _distinct_versions(store: Store, model: str) -> list[int]:
    versions: list[int] = []
    sql = "SELECT MIN(version) FROM predictions WHERE model = ? AND version > ?"
    while (row := store.query(sql, (model, versions[-1] if versions else -(2**63)))[0])[0] is not None:
        versions.append(row[0])
    return versions
