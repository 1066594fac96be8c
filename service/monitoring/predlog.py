"""The prediction log: what each model version was asked, what it answered and, later, the truth.

``PredictionLog.record`` writes a (deterministically sampled) batch of predictions with its
inputs redacted by ``privacy.redact``: inputs, outputs and probabilities once per batch, column
by column (one ``prediction_batches`` row), and a slim ``predictions`` row per prediction (id,
time, model, version, batch and row in it) for feedback and windows, all inserted by one
statement from a JSON array of the ids. A 10,000-row batch so costs a few serialisations of
whole arrays, not a JSON object per row with the feature names repeated. ``record_feedback``
stores ground truth by prediction id; ``window`` reads the last N predictions (or the last T
seconds) of a version back as the *window* shape the monitoring maths takes (see
``service.monitoring``), slicing the few batches its rows come from; ``purge`` applies
retention. Recording never raises into a request: a failed write is logged once per burst,
counted on the store (``write_failures``) and reported as ``False``. No Flask.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.monitoring.privacy import hash_column, hash_value, pii_names, redact
from service.monitoring.window_columns import (
    Stored,
    as_array,
    feature_column,
    gather,
    probability_matrix,
    sparse,
)
from service.store import MAX_PARAMS, Store, chunks, erasure

log = logging.getLogger(__name__)

#: The most predictions one window reads, whatever its size in minutes.
MAX_WINDOW_ROWS = 100_000

#: Longest prediction id we look up; anything longer is malformed (ids are ~30 characters).
MAX_ID_CHARS = 128
#: Feature types read back as float64 with NaN for missing; the others as object arrays with None.
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
PREDICTION_COLUMNS = ("id", "ts", "model", "version", "batch", "row_index")
#: ``predictions.subject`` of a row whose subject value was missing: found by no erasure, but
#: not NULL, so the rows of a batch with a subject are all under the partial indexes.
NO_SUBJECT = ""
BATCH_COLUMNS = ("ts", "model", "version", "request_id", "latency_ms", "rows", "features", "inputs", "outputs",
                 "probabilities")
#: The NOT NULL columns of a previous-layout ``predictions`` table, and what new rows put there.
LEGACY_COLUMNS = {"inputs": "'{}'", "output": "'null'"}
#: numpy kinds orjson writes itself (OPT_SERIALIZE_NUMPY): bool, signed and unsigned int, float.
NUMPY_KINDS = "biuf"
_HASH_SCALE = float(2**64)


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
class EncodedBatch:
    """One request's logged rows, encoded before the write lock is taken."""

    values: tuple[Any, ...]  # of BATCH_COLUMNS
    ids: str  # JSON list of the stored rows' prediction ids, in row order ([id, subject hash] pairs with a subject)
    subjects: bool = False  # whether ``ids`` holds pairs


def is_sampled(prediction_id: str, rate: float) -> bool:
    """Return whether an id falls in the sample: the same answer for the same id, every time."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(prediction_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE < rate


class PredictionLog:
    """Record predictions and feedback in the shared store and read windows back."""

    def __init__(self, store: Store, *, sample_rate: float = 1.0, pii_key: bytes | str | None = None,
                 late_after_seconds: float | None = None):
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within 0..1, got {sample_rate}")
        self.store = store
        self.sample_rate = sample_rate  # share of predictions recorded, chosen by id hash
        self.pii_key = pii_key.encode() if isinstance(pii_key, str) else pii_key  # None: PII is dropped
        self.late_after_seconds = late_after_seconds  # feedback this long after its prediction is "late"
        self._insert_batch = store.insert_sql("prediction_batches", BATCH_COLUMNS) + " RETURNING batch"
        self._store_key: bytes | None = None  # the store's own subject key, read once (see subject_key)

    @property
    def _legacy(self) -> bool:
        """A database of the previous layout wants its old NOT NULL columns filled (see Store).

        Read at use, not at start: the store learns the layout once it first reaches the database.
        """
        return self.store.legacy_predictions

    def _insert(self, subjects: bool) -> str:
        # One row per element of the ids' JSON array: j.value the id, j.key its row in the batch
        # (with subjects, pairs: j.a the id, j.b its subject hash).
        # A prediction id seen again (a retried write) keeps its first row, and so its first batch.
        legacy = LEGACY_COLUMNS if self._legacy else {}
        if subjects:
            values = ", ".join(("j.a", "?", "?", "?", "?", "j.key", "j.b", *legacy.values()))
            select = f"SELECT {values} FROM {self.store.json_pairs()}"  # noqa: S608  # nosec B608  # constants and "?" only
            return self.store.insert_sql("predictions", (*PREDICTION_COLUMNS, "subject", *legacy), conflict="ignore",
                                         select=select)
        values = ", ".join(("j.value", "?", "?", "?", "?", "j.key", *legacy.values()))
        return self.store.insert_sql("predictions", (*PREDICTION_COLUMNS, *legacy), conflict="ignore",
                                     select=f"SELECT {values} FROM {self.store.json_elements()}")  # nosec B608  # noqa: S608  constants and "?" only

    def subject_key(self) -> bytes:
        """The key subjects are hashed with: ``PII_HASH_KEY``, else the store's own (made once).

        Without PII_HASH_KEY the key lives in the database next to the hashes: a reader of the
        log's tables alone (an export, a stolen copy of one table) cannot turn a hash back into a
        customer id, while erasure from any process still finds the rows. Raises ``sqlite3.Error``.
        """
        if self.pii_key:
            return self.pii_key
        if self._store_key is None:
            self._store_key = erasure.subject_key(self.store)
            log.warning("subjects are hashed with a key kept in the store; set PII_HASH_KEY to keep it elsewhere")
        return self._store_key

    def subject_hashes(self, subject: Any) -> list[str]:
        """Every hash a logged subject equal to ``subject`` may carry: one per key it may have been hashed
        with (PII_HASH_KEY, and the store's own if one was ever made). An integer and its decimal text
        hash alike. Never makes a key; raises ``sqlite3.Error``."""
        keys = [key for key in (self.pii_key, erasure.stored_subject_key(self.store)) if key]
        return list(dict.fromkeys(h for key in keys if (h := hash_value(subject, key))))

    def erase(self, subject: Any, model: str | None = None) -> tuple[str, dict[str, int]]:
        """Delete every logged prediction about ``subject`` (of ``model`` only, when given), its feedback
        and its rows in the stored batches; return the subject's hash under the current key (what an
        audit record may name) and the count per table. Raises ``sqlite3.Error``."""
        hashes = self.subject_hashes(subject)
        counts = self.store.erase(hashes, model)
        return hash_value(subject, self.subject_key()) or "", counts

    @property
    def write_failures(self) -> int:
        """Failed writes of this process to the store (all tables), for a metric."""
        return self.store.write_failures

    def record(self, model: str, version: int, request_id: str | None, ids: Sequence[str],
               columns: dict[str, np.ndarray], predictions: np.ndarray | Sequence[Any],
               probabilities: np.ndarray | None, latency_ms: float, features: list[dict[str, Any]],
               *, now: float | None = None, subject: str | None = None) -> bool:
        """Write the sampled rows of one predicted batch in one transaction; never raise."""
        try:
            batch = self.encode(model, version, request_id, ids, columns, predictions, probabilities, latency_ms,
                                features, ts=time.time() if now is None else now, subject=subject)
        except Exception as exc:  # a caller's bad value must not fail the request either
            self.store.write_failed("predictions", exc)
            return False
        if batch is None:
            return True
        return self.store.write("predictions", lambda db: self.write_encoded(db, batch))

    def encode(self, model: str, version: int, request_id: str | None, ids: Sequence[str],
               columns: dict[str, np.ndarray], predictions: Any, probabilities: Any, latency_ms: float,
               features: list[dict[str, Any]], *, ts: float, subject: str | None = None) -> EncodedBatch | None:
        """Encode the sampled rows of one batch (None when none is sampled): all before the write lock.

        ``subject`` names the feature that says whom each row is about (the manifest's): its values
        are stored as keyed hashes in ``predictions.subject`` for erasure. Raises ``sqlite3.Error``
        when the store's subject key is needed and cannot be read.
        """
        n = len(ids)
        keep = None if self.sample_rate >= 1.0 else [i for i, pid in enumerate(ids) if is_sampled(pid, self.sample_rate)]
        if n == 0 or keep == []:
            return None
        rows = None if keep is None else np.asarray(keep)

        def take(values: Any, what: str) -> np.ndarray:
            array = np.asarray(values)
            if len(array) != n:
                raise ValueError(f"{what} has {len(array)} rows for {n} prediction ids")
            return array if rows is None else array[rows]

        safe = redact(features, columns, self.pii_key)
        names = list(safe)
        inputs = [_column(take(safe[name], f"column {name!r}")) for name in names]
        outputs = _column(take(predictions, "predictions"))
        probas = _dumps(_column(take(probabilities, "probabilities"))) if probabilities is not None else None
        kept_ids = list(ids) if keep is None else [ids[i] for i in keep]
        values = (float(ts), model, int(version), request_id, float(latency_ms), len(kept_ids), _dumps(names),
                  _dumps(inputs), _dumps(outputs), probas)
        if not subject:
            return EncodedBatch(values, _dumps(kept_ids))
        raw = columns.get(subject)
        if raw is None:
            hashes = [NO_SUBJECT] * len(kept_ids)
        else:  # with PII_HASH_KEY the subject's column was just hashed with that key (it is pii): reuse it
            what = f"column {subject!r}"
            reuse = self.pii_key and subject in safe and subject in pii_names(features)
            hashed = take(safe[subject], what) if reuse else hash_column(take(raw, what), self.subject_key())
            hashes = [h or NO_SUBJECT for h in hashed.tolist()]
        return EncodedBatch(values, _dumps([list(pair) for pair in zip(kept_ids, hashes, strict=True)]), subjects=True)

    def write_encoded(self, db: Any, batch: EncodedBatch) -> None:
        """Insert the batch, then its predictions pointing at it (in the caller's transaction)."""
        ts, model, version = batch.values[:3]
        (key,) = db.execute(self._insert_batch, batch.values).fetchall()[0]
        if db.execute(self._insert(batch.subjects), (ts, model, version, key, batch.ids)).rowcount == 0:
            db.execute("DELETE FROM prediction_batches WHERE batch = ?", (key,))  # all logged before (a retry)

    def record_feedback(self, model: str, items: list[dict[str, Any]], now: float | None = None) -> dict[str, Any]:
        """Store ground truth by prediction id in one transaction; the first label for an id wins.

        Returns ``{"accepted": n, "unknown": [...], "duplicate": [...], "late": [...]}``. Unknown
        ids are not in this model's log (never issued, another model's, not sampled, purged) or
        malformed (an item that is not ``{"id": str, "label": non-null}``; reported as its id,
        or None). Duplicates already have a label, or repeat an id earlier in this batch; their
        labels are ignored. Late ids are accepted but arrived more than ``late_after_seconds``
        after their prediction. Raises ``sqlite3.Error`` when the store cannot be written: the
        client must hear that its labels were not kept.
        """
        now = time.time() if now is None else now
        entries: list[tuple[str | None, str | None]] = []  # (id, label JSON); label None = malformed
        for item in items if isinstance(items, (list, tuple)) else ():
            pid = item.get("id") if isinstance(item, dict) else None
            if not isinstance(pid, str) or not 0 < len(pid) <= MAX_ID_CHARS or item.get("label") is None:
                entries.append((pid if isinstance(pid, str) and len(pid) <= MAX_ID_CHARS else None, None))
            else:
                entries.append((pid, _dumps(item["label"])))
        wanted = list(dict.fromkeys(pid for pid, label in entries if label is not None))
        result: dict[str, Any] = {"accepted": 0, "unknown": [], "duplicate": [], "late": []}
        # Read, decide, write: one batch per model at a time (SQLite's write lock does that alone).
        with self.store.transaction(lock=f"feedback:{model}") as db:
            found: dict[str, float] = {}
            for chunk in chunks(wanted, MAX_PARAMS):
                marks = ", ".join("?" * len(chunk))
                cursor = db.execute(f"SELECT id, ts FROM predictions WHERE model = ? AND id IN ({marks})", (model, *chunk))  # nosec B608  # noqa: S608  only "?" marks
                found.update((row[0], row[1]) for row in cursor)
            labelled: set[str] = set()
            for chunk in chunks(list(found), MAX_PARAMS):
                marks = ", ".join("?" * len(chunk))
                labelled.update(r[0] for r in db.execute(f"SELECT id FROM feedback WHERE id IN ({marks})", chunk))  # nosec B608  # noqa: S608  only "?" marks
            rows = []
            for pid, label in entries:
                if label is None or pid not in found:
                    result["unknown"].append(pid)
                elif pid in labelled:
                    result["duplicate"].append(pid)
                else:
                    labelled.add(pid)
                    rows.append((pid, now, label, model))
                    if self.late_after_seconds is not None and now - found[pid] > self.late_after_seconds:
                        result["late"].append(pid)
            db.executemany("INSERT INTO feedback (id, ts, label, model) VALUES (?, ?, ?, ?)", rows)
        result["accepted"] = len(rows)
        return result

    def window(self, model: str, version: int | None, *, last_n: int | None = None, since: float | None = None,
               features: list[dict[str, Any]]) -> Window:
        """Read a version's predictions (all versions for None), newest first, with their labels."""
        legacy = "p.output, p.probabilities" if self._legacy else "NULL, NULL"
        sql = (f"SELECT p.id, p.ts, p.batch, p.row_index, f.label, {legacy}"  # nosec B608  # noqa: S608  constant column lists
               " FROM predictions p LEFT JOIN feedback f ON f.id = p.id WHERE p.model = ?")
        params: list[Any] = [model]
        if version is not None:
            sql += " AND p.version = ?"
            params.append(int(version))
        if since is not None:
            sql += " AND p.ts >= ?"
            params.append(float(since))
        sql += " ORDER BY p.ts DESC, p.rowid DESC"
        # a window by time is capped too: the newest MAX_WINDOW_ROWS, never the whole table
        sql += " LIMIT ?"
        params.append(max(int(last_n), 0) if last_n is not None else MAX_WINDOW_ROWS)
        rows = self.store.fetch(sql, tuple(params))
        ids, ts, batches, positions, labels, old_outputs, old_probas = \
            (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 7
        n = len(ids)
        hidden = pii_names(features)
        stored = self._batches(batches)
        # Each row points into the concatenation of its batches' columns; a row without a stored
        # batch (purged, or a row of the previous layout) points at a missing value past the end.
        offsets, total = {}, 0
        for key, found in stored.items():
            offsets[key] = total
            total += found.rows
        index = np.array([offsets[b] + p if b in offsets and p is not None and 0 <= p < stored[b].rows else total
                          for b, p in zip(batches, positions, strict=True)], dtype=np.int64)
        outputs = gather([found.outputs for found in stored.values()], index)
        probas = gather([found.probabilities for found in stored.values()], index)
        for i in (i for i, text in enumerate(old_outputs) if text is not None and batches[i] is None):
            outputs[i] = orjson.loads(old_outputs[i])  # a previous-layout row: its JSON is its own
            probas[i] = None if old_probas[i] is None else orjson.loads(old_probas[i])
        return Window(
            columns={f["name"]: feature_column(f, stored.values(), index, f["name"] in hidden) for f in features},
            predictions=as_array(outputs),
            probabilities=probability_matrix(probas),
            labels=sparse(labels, n),
            ts=np.array(ts, dtype=np.float64),
            ids=ids,
            n=n,
            redacted=hidden,
        )

    def _batches(self, keys: list[int | None]) -> dict[int, Stored]:
        """Read the batches some rows come from, each once."""
        wanted = list(dict.fromkeys(key for key in keys if key is not None))
        stored = {}
        for chunk in chunks(wanted, MAX_PARAMS):
            sql = ("SELECT batch, rows, features, inputs, outputs, probabilities FROM prediction_batches"  # nosec B608  # noqa: S608  only "?" marks
                   f" WHERE batch IN ({', '.join('?' * len(chunk))})")
            for key, rows, names, inputs, outputs, probas in self.store.fetch(sql, tuple(chunk)):
                outputs = orjson.loads(outputs)
                probas = orjson.loads(probas) if probas is not None else None
                stored[key] = Stored(rows, dict(zip(orjson.loads(names), orjson.loads(inputs), strict=True)),
                                     outputs if len(outputs) == rows else [None] * rows,
                                     probas if probas is not None and len(probas) == rows else [None] * rows)
        return stored

    def purge(self, older_than_seconds: float, now: float | None = None) -> dict[str, int]:
        """Delete predictions (with their feedback), requests and shadow rows older than the cut-off."""
        return self.store.purge(older_than_seconds, now)


def _dumps(value: Any) -> str:
    # NaN and inf become null (orjson's rule): missing stays missing. TEXT, not BLOB: SQLite's
    # JSON functions read a BLOB as JSONB.
    return orjson.dumps(value, default=str, option=JSON_OPTIONS).decode()


def _column(values: np.ndarray) -> np.ndarray | list[Any]:
    """An array as orjson writes it fastest: numbers as a C-contiguous array (orjson would hand
    another to ``default``), floats as float64 (the values ``tolist`` gives); others as a list."""
    if values.dtype.kind in NUMPY_KINDS and values.ndim in (1, 2):
        return np.ascontiguousarray(values, dtype=np.float64 if values.dtype.kind == "f" else None)
    return values.tolist()
