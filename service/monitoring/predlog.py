"""The prediction log: what each model version was asked, what it answered and, later, the truth.

``PredictionLog.record`` writes a (deterministically sampled) batch of predictions with its
inputs redacted by ``privacy.redact`` as ONE record (a ``prediction_batches`` row): inputs,
outputs and probabilities column by column, the request's id base and, when sampled or erased,
the positions of the rows kept, and the rows' subject hashes when the manifest names a subject.
A prediction id ``<base>-<i>`` is found by (model, base) and ``i``: a 10,000-row batch so costs a
copy of its numeric columns' bytes (``service.store.columns``; strings stay JSON) and one indexed
row, not an indexed row per prediction. The
same batch written twice (a replay) stays one record. ``record_feedback`` stores ground truth by
prediction id; ``window`` reads the last N predictions (or the last T seconds) of a version back
(``service.monitoring.log_window``); ``purge`` applies retention. Recording never raises into a
request: a failed write is logged once per burst, counted on the store (``write_failures``) and
reported as ``False``. No Flask.
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

from service.monitoring import log_window
from service.monitoring.log_window import MAX_WINDOW_ROWS, Window  # noqa: F401  (part of the log's surface)
from service.monitoring.privacy import hash_column, hash_value, pii_names, redact
from service.store import MAX_PARAMS, Store, blobs, chunks, erasure
from service.store import columns as columns_
from service.store.records import split_id

log = logging.getLogger(__name__)

#: Longest prediction id we look up; anything longer is malformed (ids are ~30 characters).
MAX_ID_CHARS = 128
#: The subject hash of a row whose subject value was missing: found by no erasure.
NO_SUBJECT = ""
BATCH_COLUMNS = ("ts", "model", "version", "request_id", "latency_ms", "rows", "base", "positions", "subjects",
                 "features", "inputs", "outputs", "probabilities", "arrays", "arrays_ref")
_HASH_SCALE = float(2**64)
#: Seconds between two warning lines about blob files that cannot be written.
BLOB_FAILURE_LOG_SECONDS = 60.0
#: Feature lists (model versions) whose facts are kept at most (see ``PredictionLog._feature_facts``).
MAX_FEATURE_LISTS = 64


@dataclass(frozen=True)
class EncodedBatch:
    """One request's logged rows as one record, encoded before the write lock is taken.

    Plain JSON values and one ``bytes`` field, in ``BATCH_COLUMNS`` order: the spool
    (``service.monitoring.record_format.pack``) carries ``arrays`` as a raw blob after the rest.
    """

    ts: float
    model: str
    version: int
    request_id: str | None
    latency_ms: float
    rows: int  # stored rows
    base: str  # the request's id base: row k is <base>-<position k>
    positions: str | None  # JSON list of the stored rows' positions when sampled; None: all rows
    subjects: str | None  # JSON list of the stored rows' subject hashes; None without a subject
    features: str  # JSON
    inputs: str  # JSON: per feature a list of values or a descriptor into ``arrays``
    outputs: str  # JSON: a list or a descriptor
    probabilities: str | None  # JSON: a list of rows or a descriptor
    arrays: bytes | None = None  # the numeric columns' bytes (service.store.columns)
    arrays_ref: str | None = None  # where they are instead, for a large record on SQLite (service.store.blobs)


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
        # A replayed batch (same model and id base) keeps its first record.
        self._insert_batch = store.insert_sql("prediction_batches", BATCH_COLUMNS, conflict="ignore")
        self._store_key: bytes | None = None  # the store's own subject key, read once (see subject_key)
        self._facts: dict[int, tuple[list[dict[str, Any]], str, bool]] = {}  # see _feature_facts
        self._blob_failure_logged = float("-inf")

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
               features: list[dict[str, Any]], *, ts: float, subject: str | None = None,
               positions: Sequence[int] | None = None, block: np.ndarray | None = None) -> EncodedBatch | None:
        """Encode the sampled rows of one batch (None when none is sampled): all before the write lock.

        ``ids`` are the request's ``<base>-<i>`` for i in 0..n-1: only its length and first id are
        read, plus each id when sampling. ``positions``, for rows that are a sample of a larger
        batch (a batch run's rows, which a request-sized record could not hold), gives each row's
        position in it, ascending, and ``ids`` are then ``<base>-<position>``. ``subject`` names the
        feature that says whom each row is about (the manifest's): its values are stored as keyed
        hashes for erasure. Raises ``sqlite3.Error`` when the store's subject key is needed and
        cannot be read. ``block``, the request's validated float block whose rows are ``columns`` in
        feature order (``ValidatedBatch.block``), is stored as it is when no feature is redacted.
        """
        n = len(ids)
        if n == 0:
            return None
        parsed = split_id(ids[0])
        first = 0 if positions is None else positions[0]
        if parsed is None or parsed[1] != first:
            raise ValueError(f"prediction ids must be <base>-{first} .., got {ids[0]!r} first")
        if positions is not None and (len(positions) != n or any(b <= a for a, b in zip(positions, positions[1:], strict=False))):
            raise ValueError("positions must be ascending, one per prediction id")
        base = parsed[0]
        keep = None if self.sample_rate >= 1.0 else [i for i in range(n) if is_sampled(ids[i], self.sample_rate)]
        if keep == []:
            return None
        stored = keep if positions is None else [int(positions[i]) for i in (range(n) if keep is None else keep)]
        rows = None if keep is None else np.asarray(keep)

        def take(values: Any, what: str) -> np.ndarray:
            array = np.asarray(values)
            if len(array) != n:
                raise ValueError(f"{what} has {len(array)} rows for {n} prediction ids")
            return array if rows is None else array[rows]

        arrays = columns_.ArrayWriter()
        names_json, has_pii = self._feature_facts(features)
        if block is not None and rows is None and not has_pii and block.shape == (len(features), n):
            inputs_json = arrays.block(block)  # every feature, unredacted, already one block: stored as is
        else:
            safe = redact(features, columns, self.pii_key)
            names = list(safe)
            names_json = _dumps(names)
            inputs_json = _dumps(arrays.columns([take(safe[name], f"column {name!r}") for name in names]))
        outputs = arrays.column(take(predictions, "predictions"))
        probas = _dumps(arrays.column(take(probabilities, "probabilities"))) if probabilities is not None else None
        hashes = None
        if subject:
            raw = columns.get(subject)
            if raw is None:
                hashes = [NO_SUBJECT] * (n if keep is None else len(keep))
            else:  # with PII_HASH_KEY the subject's column was just hashed with that key (it is pii): reuse it
                what = f"column {subject!r}"
                reuse = self.pii_key and has_pii and subject in pii_names(features)
                hashed = take(safe[subject], what) if reuse else hash_column(take(raw, what), self.subject_key())
                hashes = [h or NO_SUBJECT for h in hashed.tolist()]
        return EncodedBatch(float(ts), model, int(version), request_id, float(latency_ms), n if keep is None else len(keep),
                            base, None if stored is None else _dumps(stored), None if hashes is None else _dumps(hashes),
                            names_json, inputs_json, _dumps(outputs), probas, *self._place(arrays, ts))

    def _place(self, arrays: columns_.ArrayWriter, ts: float) -> tuple[bytes | None, str | None]:
        """The record's (arrays, arrays_ref): a large one's bytes go to a blob file beside a SQLite
        store (one write, no pages); when that file cannot be written they stay in the row."""
        if self.store.blobs is not None and arrays.size >= blobs.MIN_BYTES:
            try:
                return None, self.store.blobs.append(arrays.parts(), ts)
            except OSError as exc:
                now = time.monotonic()
                if now - self._blob_failure_logged >= BLOB_FAILURE_LOG_SECONDS:
                    self._blob_failure_logged = now
                    log.warning("a blob file could not be written; large records keep their bytes in the database",
                                extra={"error": f"{type(exc).__name__}: {exc}"})
        return arrays.blob(), None

    def _feature_facts(self, features: list[dict[str, Any]]) -> tuple[str, bool]:
        """The JSON list of every feature's name, and whether any is personal data: once per feature list."""
        cached = self._facts.get(id(features))
        if cached is None or cached[0] is not features:
            if len(self._facts) >= MAX_FEATURE_LISTS:
                self._facts.clear()
            cached = self._facts[id(features)] = (features, _dumps([f["name"] for f in features]),
                                                  bool(pii_names(features)))
        return cached[1], cached[2]

    def write_encoded(self, db: Any, *batches: EncodedBatch) -> None:
        """Insert the batches' records (in the caller's transaction, one statement); a replay inserts nothing."""
        db.executemany(self._insert_batch, [tuple(getattr(b, name) for name in BATCH_COLUMNS) for b in batches])

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
            found = _issued(db, model, wanted)
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
        return log_window.read(self.store, model, version, last_n=last_n, since=since, features=features)

    def purge(self, older_than_seconds: float, now: float | None = None) -> dict[str, int]:
        """Delete predictions (with their feedback), requests and shadow rows older than the cut-off."""
        return self.store.purge(older_than_seconds, now)


def _issued(db: Any, model: str, ids: list[str]) -> dict[str, float]:
    """The ids among ``ids`` that are stored rows of ``model``'s log, with their batch's time."""
    parsed = {pid: found for pid in ids if (found := split_id(pid)) is not None}
    records: dict[str, tuple[float, int, set[int] | None]] = {}
    for chunk in chunks(list(dict.fromkeys(base for base, _ in parsed.values())), MAX_PARAMS - 1):
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT base, ts, rows, positions FROM prediction_batches WHERE model = ? AND base IN ({marks})"  # nosec B608  # noqa: S608  only "?" marks
        for base, ts, rows, positions in db.execute(sql, (model, *chunk)).fetchall():
            records[base] = (ts, rows, None if positions is None else set(orjson.loads(positions)))
    found = {}
    for pid, (base, i) in parsed.items():
        record = records.get(base)
        if record is not None and (i < record[1] if record[2] is None else i in record[2]):
            found[pid] = record[0]
    return found


def _dumps(value: Any) -> str:
    return columns_.dumps(value)
