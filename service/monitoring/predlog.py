"""The prediction log: what each model version was asked, what it answered and, later, the truth.

``PredictionLog.record`` writes a (deterministically sampled) batch of predictions with its
inputs redacted by ``privacy.redact``; ``record_feedback`` stores ground truth by prediction
id; ``window`` reads the last N predictions (or the last T seconds) of a version back as the
*window* shape the monitoring maths takes (see ``service.monitoring``); ``purge`` applies
retention. Recording never raises into a request: a failed write is logged once per burst,
counted on the store (``write_failures``) and reported as ``False``. No Flask.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from service.monitoring.privacy import pii_names, redact
from service.store import MAX_PARAMS, Store, chunks

log = logging.getLogger(__name__)

#: Longest prediction id we look up; anything longer is malformed (ids are ~30 characters).
MAX_ID_CHARS = 128
#: Feature types read back as float64 with NaN for missing; the others as object arrays with None.
NUMERIC_TYPES = ("float", "int")
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
PREDICTION_COLUMNS = ("id", "request_id", "ts", "model", "version", "inputs", "output", "probabilities", "latency_ms")
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
        # A prediction id seen again (a retried write) keeps its first row.
        self._insert = store.insert_sql("predictions", PREDICTION_COLUMNS, conflict="ignore")

    @property
    def write_failures(self) -> int:
        """Failed writes of this process to the store (all tables), for a metric."""
        return self.store.write_failures

    def record(self, model: str, version: int, request_id: str | None, ids: Sequence[str],
               columns: dict[str, np.ndarray], predictions: np.ndarray | Sequence[Any],
               probabilities: np.ndarray | None, latency_ms: float, features: list[dict[str, Any]],
               *, now: float | None = None) -> bool:
        """Write the sampled rows of one predicted batch in one transaction; never raise."""
        try:
            rows = self._rows(model, version, request_id, ids, columns, predictions, probabilities, latency_ms,
                              features, time.time() if now is None else now)
        except Exception as exc:  # a caller's bad value must not fail the request either
            self.store.write_failed("predictions", exc)
            return False
        if not rows:
            return True
        return self.store.write("predictions", lambda db: db.executemany(self._insert, rows))

    def _rows(self, model: str, version: int, request_id: str | None, ids: Sequence[str],
              columns: dict[str, np.ndarray], predictions: Any, probabilities: Any, latency_ms: float,
              features: list[dict[str, Any]], ts: float) -> list[tuple[Any, ...]]:
        n = len(ids)
        keep = None if self.sample_rate >= 1.0 else [i for i, pid in enumerate(ids) if is_sampled(pid, self.sample_rate)]
        if keep is not None and not keep:
            return []

        def take(values: Any, what: str) -> list[Any]:
            array = np.asarray(values)
            if len(array) != n:
                raise ValueError(f"{what} has {len(array)} rows for {n} prediction ids")
            return (array if keep is None else array[keep]).tolist()

        safe = redact(features, columns, self.pii_key)
        names = list(safe)
        values = [take(safe[name], f"column {name!r}") for name in names]
        inputs = [_dumps(dict(zip(names, row, strict=True))) for row in zip(*values, strict=True)] if names else None
        outputs = [_dumps(value) for value in take(predictions, "predictions")]
        probas = [_dumps(row) for row in take(probabilities, "probabilities")] if probabilities is not None else None
        kept_ids = list(ids) if keep is None else [ids[i] for i in keep]
        m = len(kept_ids)
        return list(zip(kept_ids, repeat(request_id, m), repeat(float(ts), m), repeat(model, m), repeat(int(version), m),
                        inputs or repeat("{}", m), outputs, probas or repeat(None, m), repeat(float(latency_ms), m), strict=True))

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
                cursor = db.execute(f"SELECT id, ts FROM predictions WHERE model = ? AND id IN ({marks})", (model, *chunk))
                found.update((row[0], row[1]) for row in cursor)
            labelled: set[str] = set()
            for chunk in chunks(list(found), MAX_PARAMS):
                marks = ", ".join("?" * len(chunk))
                labelled.update(r[0] for r in db.execute(f"SELECT id FROM feedback WHERE id IN ({marks})", chunk))
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
        sql = ("SELECT p.id, p.ts, p.inputs, p.output, p.probabilities, f.label"
               " FROM predictions p LEFT JOIN feedback f ON f.id = p.id WHERE p.model = ?")
        params: list[Any] = [model]
        if version is not None:
            sql += " AND p.version = ?"
            params.append(int(version))
        if since is not None:
            sql += " AND p.ts >= ?"
            params.append(float(since))
        sql += " ORDER BY p.ts DESC, p.rowid DESC"
        if last_n is not None:
            sql += " LIMIT ?"
            params.append(max(int(last_n), 0))
        rows = self.store.fetch(sql, tuple(params))
        ids, ts, inputs, outputs, probas, labels = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 6
        n = len(ids)
        hidden = pii_names(features)
        return Window(
            columns=_columns(features, _loads_many(inputs), hidden, n),
            predictions=_array(_loads_many(outputs)),
            probabilities=_probabilities(probas),
            labels=_sparse(labels, n),
            ts=np.array(ts, dtype=np.float64),
            ids=ids,
            n=n,
            redacted=hidden,
        )

    def purge(self, older_than_seconds: float, now: float | None = None) -> dict[str, int]:
        """Delete predictions (with their feedback), requests and shadow rows older than the cut-off."""
        return self.store.purge(older_than_seconds, now)


def _dumps(value: Any) -> str:
    # NaN and inf become null (orjson's rule): missing stays missing. TEXT, not BLOB: SQLite's
    # JSON functions read a BLOB as JSONB.
    return orjson.dumps(value, default=str, option=JSON_OPTIONS).decode()


def _loads_many(texts: list[str]) -> list[Any]:
    # One parse of a joined array is about twice as fast as one orjson.loads per row.
    return orjson.loads("[" + ",".join(texts) + "]") if texts else []


def _columns(features: list[dict[str, Any]], records: list[dict[str, Any]], hidden: frozenset[str],
             n: int) -> dict[str, np.ndarray]:
    columns = {}
    for feature in features:
        name = feature["name"]
        numeric = feature.get("type") in NUMERIC_TYPES
        if name in hidden:
            columns[name] = np.full(n, np.nan) if numeric else np.full(n, None, dtype=object)
            continue
        values = [record.get(name) for record in records]
        columns[name] = _numeric(values) if numeric else _objects(values)
    return columns


def _numeric(values: list[Any]) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)  # None -> NaN
    except (TypeError, ValueError):  # a value of another type (the schema changed): treat it as missing
        return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in values],
                        dtype=np.float64)


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _array(values: list[Any]) -> np.ndarray:
    if any(isinstance(v, (str, list, dict)) or v is None for v in values):
        return _objects(values)  # string classes stay Python strings, as the runtime gives them
    return np.array(values)


def _probabilities(texts: list[str | None]) -> np.ndarray | None:
    present = [i for i, text in enumerate(texts) if text is not None]
    if not present:
        return None
    rows = _loads_many([texts[i] for i in present])
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        return None  # not one class list: no matrix to give
    out = np.full((len(texts), width), np.nan)
    out[present] = np.array(rows, dtype=np.float64)
    return out


def _sparse(texts: list[str | None], n: int) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    present = [i for i, text in enumerate(texts) if text is not None]
    for i, value in zip(present, _loads_many([texts[i] for i in present]), strict=True):
        out[i] = value
    return out
