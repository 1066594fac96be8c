"""Erasure: delete everything the prediction log holds about one person, found by a keyed hash.

A model whose manifest names a ``subject`` feature has each batch record carry the keyed hash of
that value for each of its rows (``prediction_batches.subjects``, a JSON list). ``erase`` finds
the records holding a hash, deletes the person's rows' feedback and rewrites each record without
those rows, in one transaction per record (or deletes it once it is empty), in the binary
encoding of ``service.store.columns`` whichever encoding the record had. The other rows keep
their ids: the record's ``positions`` list says which request positions are left, so an erased
row's id becomes unknown and nobody else's moves. The hash key is ``PII_HASH_KEY`` or, without
one, a random secret made once and kept in the store (``subject_key``). This module never sees a
raw subject; no Flask.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

import numpy as np
import orjson

from service.store import MAX_PARAMS, Store, chunks, columns
from service.store.records import ids_of

#: ``store_secrets`` row of the key subjects are hashed with when no PII_HASH_KEY is configured.
SUBJECT_KEY = "subject-key"
#: The store-wide lock erasures take: two erasures never rewrite the same batch at once.
LOCK = "erase"
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
    """Delete the rows with any of these subject hashes, their feedback, and them from their batch records.

    Returns the count per table. Each affected record is its own transaction, so serving writes
    interleave; running it again after a failure finishes the job. Raises ``sqlite3.Error``.
    """
    counts = dict.fromkeys(COUNTS, 0)
    hashes = [h for h in dict.fromkeys(hashes) if h]
    if not hashes:
        return counts
    # No index can serve a hash inside a JSON list: the records with subjects are scanned. Erasure is
    # rare; an index row per prediction would cost every logged batch (what batch records avoid).
    # Hashes are hex, so LIKE's wildcards cannot occur in them.
    for chunk in chunks(hashes, MAX_PARAMS - 1):
        likes = " OR ".join(["subjects LIKE ?"] * len(chunk))
        sql = f"SELECT batch, model FROM prediction_batches WHERE subjects IS NOT NULL AND ({likes})"  # noqa: S608  # nosec B608  # only "?" marks
        found = store.fetch(sql, tuple(f'%"{h}"%' for h in chunk))
        for batch in dict.fromkeys(key for key, owner in found if model in (None, owner)):
            with store.transaction(lock=LOCK) as db:
                _erase_in_batch(store, db, batch, set(chunk), counts)
    return counts


def _erase_in_batch(store: Store, db: Any, batch: int, hashes: set[str], counts: dict[str, int]) -> None:
    """Within one transaction: delete the person's rows of one record and rewrite what remains of it.

    A record whose bytes are in a blob file is rewritten into its row, and the file's old bytes
    are overwritten with zeros before the transaction commits: should that fail, nothing is
    erased yet and erasing again retries it."""
    found = db.execute("SELECT rows, base, positions, subjects, inputs, outputs, probabilities, arrays, arrays_ref"
                       " FROM prediction_batches WHERE batch = ?", (batch,)).fetchall()
    if not found:
        return
    size, base, positions, subjects, inputs, outputs, probabilities, arrays, ref = found[0]
    arrays = store.arrays_of(arrays, ref)
    subjects = orjson.loads(subjects)
    gone = [k for k, h in enumerate(subjects) if h in hashes]
    if not gone:
        return
    ids = ids_of(base, size, None if positions is None else orjson.loads(positions))
    victims = [ids[k] for k in gone]
    for chunk in chunks(victims, MAX_PARAMS):
        sql = f"DELETE FROM feedback WHERE id IN ({', '.join('?' * len(chunk))})"  # noqa: S608  # nosec B608  # only "?" marks
        counts["feedback"] += db.execute(sql, chunk).rowcount
    counts["predictions"] += len(victims)
    removed = set(gone)
    keep = [k for k in range(size) if k not in removed]
    if not keep:
        db.execute("DELETE FROM prediction_batches WHERE batch = ?", (batch,))
        counts["prediction_batches_deleted"] += 1
        _overwrite(store, ref)
        return
    kept_positions = [int(ids[k].rpartition("-")[2]) for k in keep]
    # Rewritten in the binary encoding, whichever it was written in: what is left reads the same.
    writer = columns.ArrayWriter()
    new_inputs = [writer.column(_take(column, keep)) for column in columns.read_inputs(inputs, arrays)]
    new_outputs = writer.column(_take(columns.read_column(outputs, arrays), keep))
    new_probabilities = None if probabilities is None else _dumps(
        writer.column(_take(columns.read_column(probabilities, arrays), keep)))
    db.execute("UPDATE prediction_batches SET rows = ?, positions = ?, subjects = ?, inputs = ?, outputs = ?,"
               " probabilities = ?, arrays = ?, arrays_ref = NULL WHERE batch = ?",
               (len(keep), _dumps(kept_positions), _dumps([subjects[k] for k in keep]), _dumps(new_inputs),
                _dumps(new_outputs), new_probabilities, writer.blob(), batch))
    counts["prediction_batches_rewritten"] += 1
    _overwrite(store, ref)


def _overwrite(store: Store, ref: str | None) -> None:
    """Zero a rewritten record's old bytes in their blob file (raised as ``sqlite3.Error``: rolled back)."""
    if ref is None or store.blobs is None:
        return
    try:
        store.blobs.erase(ref)
    except OSError as exc:
        raise sqlite3.OperationalError(f"the erased rows' bytes could not be overwritten in {ref.split(':')[0]}: "
                                       f"{exc}") from exc


def _take(values: list[Any] | np.ndarray | None, keep: list[int]) -> list[Any] | np.ndarray | None:
    """The kept rows of a column; one shorter than the batch (written by another schema) or unreadable
    is left to read as missing."""
    if values is None or len(values) <= keep[-1]:
        return values if values is not None else []
    if isinstance(values, np.ndarray):
        return values[keep]
    return columns.from_json([values[i] for i in keep])


def _dumps(value: Any) -> str:
    return columns.dumps(value)
