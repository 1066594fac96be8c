"""Erasure: delete everything the prediction log holds about one person, found by a keyed hash.

A model whose manifest names a ``subject`` feature has each logged prediction carry the keyed
hash of that value (``predictions.subject``, indexed). ``erase`` deletes those predictions and
their feedback, and removes their rows from the columns of every ``prediction_batches`` row they
were stored in: the batch is rewritten without them and the remaining predictions' ``row_index``
renumbered, in one transaction per batch (or the batch is deleted once it is empty). The hash
key is ``PII_HASH_KEY`` or, without one, a random secret made once and kept in the store
(``subject_key``). This module never sees a raw subject; no Flask.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from service.store import MAX_PARAMS, Store, chunks

#: ``store_secrets`` row of the key subjects are hashed with when no PII_HASH_KEY is configured.
SUBJECT_KEY = "subject-key"
#: The store-wide lock erasures take: two erasures never rewrite the same batch at once.
LOCK = "erase"
#: Removed rows of one batch up to which the others are renumbered by one statement (else one per row).
MAX_SHIFT_TERMS = 64
COUNTS = ("predictions", "feedback", "prediction_batches_rewritten", "prediction_batches_deleted")


def subject_key(store: Store) -> bytes:
    """Return the store's own subject-hashing key, made (once, by whichever process comes first) if missing.

    Raises ``sqlite3.Error`` when the store cannot be read or written.
    """
    found = store.fetch("SELECT value FROM store_secrets WHERE name = ?", (SUBJECT_KEY,))
    if not found:
        insert = store.insert_sql("store_secrets", ("name", "value"), conflict="ignore")
        with store.transaction(lock="secrets") as db:
            db.execute(insert, (SUBJECT_KEY, secrets.token_hex(32)))
        found = store.fetch("SELECT value FROM store_secrets WHERE name = ?", (SUBJECT_KEY,))
    return bytes.fromhex(found[0][0])


def stored_subject_key(store: Store) -> bytes | None:
    """Return the store's subject key if one was ever made (erasure must not make one)."""
    found = store.fetch("SELECT value FROM store_secrets WHERE name = ?", (SUBJECT_KEY,))
    return bytes.fromhex(found[0][0]) if found else None


def erase(store: Store, hashes: list[str], model: str | None = None) -> dict[str, int]:
    """Delete the predictions with any of these subject hashes, their feedback and their batch rows.

    Returns the count per table. Each affected batch is its own transaction, so serving writes
    interleave; running it again after a failure finishes the job. Raises ``sqlite3.Error``.
    """
    counts = dict.fromkeys(COUNTS, 0)
    hashes = [h for h in dict.fromkeys(hashes) if h]
    if not hashes:
        return counts
    for chunk in chunks(hashes, MAX_PARAMS - 1):
        marks = ", ".join("?" * len(chunk))
        # The model is filtered here, not in SQL: the planner would pick the model's index and scan its rows.
        sql = f"SELECT DISTINCT batch, model FROM predictions WHERE subject IN ({marks})"  # noqa: S608  # nosec B608  # only "?" marks
        batches = dict.fromkeys(batch for batch, found in store.fetch(sql, tuple(chunk)) if model in (None, found))
        for batch in batches:
            with store.transaction(lock=LOCK) as db:
                _erase_in_batch(db, batch, set(chunk), model, counts)
    return counts


def _erase_in_batch(db: Any, batch: int | None, hashes: set[str], model: str | None, counts: dict[str, int]) -> None:
    """Within one transaction: delete the person's rows of one batch and rewrite what remains of it."""
    if batch is None:  # a prediction whose batch is gone (purged): only its own row to delete
        marks = ", ".join("?" * len(hashes))
        sql = f"SELECT rowid, id, row_index, subject, model FROM predictions WHERE batch IS NULL AND subject IN ({marks})"  # noqa: S608  # nosec B608  # only "?" marks
        rows = db.execute(sql, tuple(hashes)).fetchall()
    else:
        rows = db.execute("SELECT rowid, id, row_index, subject, model FROM predictions"
                          " WHERE batch = ? AND subject IS NOT NULL", (batch,)).fetchall()
    victims = [r for r in rows if r[3] in hashes and (model is None or r[4] == model)]
    if not victims:
        return
    for chunk in chunks([r[1] for r in victims], MAX_PARAMS):
        sql = f"DELETE FROM feedback WHERE id IN ({', '.join('?' * len(chunk))})"  # noqa: S608  # nosec B608  # only "?" marks
        counts["feedback"] += db.execute(sql, chunk).rowcount
    db.executemany("DELETE FROM predictions WHERE rowid = ?", [(r[0],) for r in victims])
    counts["predictions"] += len(victims)
    if batch is None:
        return
    removed = sorted({r[2] for r in victims if r[2] is not None})
    found = db.execute("SELECT rows, inputs, outputs, probabilities FROM prediction_batches WHERE batch = ?",
                       (batch,)).fetchall()
    if not found:
        return
    size, inputs, outputs, probabilities = found[0]
    gone = set(removed)
    keep = [i for i in range(size) if i not in gone]
    if not keep:
        db.execute("DELETE FROM prediction_batches WHERE batch = ?", (batch,))
        counts["prediction_batches_deleted"] += 1
        return
    db.execute("UPDATE prediction_batches SET rows = ?, inputs = ?, outputs = ?, probabilities = ? WHERE batch = ?",
               (len(keep), _dumps([_take(column, keep) for column in orjson.loads(inputs)]),
                _dumps(_take(orjson.loads(outputs), keep)),
                None if probabilities is None else _dumps(_take(orjson.loads(probabilities), keep)), batch))
    counts["prediction_batches_rewritten"] += 1
    _renumber(db, batch, removed, rows, {r[0] for r in victims}, keep)


def _renumber(db: Any, batch: int, removed: list[int], rows: list[Any], victims: set[Any], keep: list[int]) -> None:
    """Shift the remaining rows of a batch down past the removed ones."""
    if removed and len(removed) <= MAX_SHIFT_TERMS:
        # One statement, each row moved down by the removed rows before it: a statement per
        # moved row costs a round trip each on PostgreSQL (1.2 s for a 10,000-row batch).
        shift = " + ".join(["CASE WHEN row_index > ? THEN 1 ELSE 0 END"] * len(removed))
        sql = (f"UPDATE predictions SET row_index = row_index - ({shift})"  # noqa: S608  # nosec B608  # only "?" marks
               " WHERE batch = ? AND subject IS NOT NULL AND row_index > ?")
        db.execute(sql, (*removed, batch, removed[0]))
        return
    new_index = {old: new for new, old in enumerate(keep)}
    moved = [(new_index.get(r[2]), r[0]) for r in rows
             if r[0] not in victims and r[2] is not None and new_index.get(r[2]) != r[2]]
    db.executemany("UPDATE predictions SET row_index = ? WHERE rowid = ?", moved)


def _take(values: list[Any], keep: list[int]) -> list[Any]:
    # A column shorter than the batch (written by another schema) is left to read as missing.
    return [values[i] for i in keep] if len(values) > keep[-1] else values


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
