"""What the shared store keeps: the tables (DDL for both backends) and the records written to them.

No Flask, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

#: DDL for both backends: ``{rowid}`` is SQLite's implicit row id made explicit on PostgreSQL;
#: ``{bytes}`` is BLOB or BYTEA.
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    {rowid}
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the answer was sent
    model TEXT NOT NULL,
    version INTEGER,                   -- the version that answered (after any fallback)
    role TEXT NOT NULL,                -- production | canary | pinned | label | fallback
    status INTEGER NOT NULL,           -- HTTP status of the answer
    latency_ms DOUBLE PRECISION NOT NULL,  -- time inside the prediction path
    rows INTEGER NOT NULL,
    fallback_from INTEGER,             -- version that failed when role = fallback
    error TEXT,                        -- error code when status >= 400
    summary TEXT                       -- JSON: class counts, or count/mean/std of regression outputs
);
CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model, ts);
CREATE TABLE IF NOT EXISTS shadow (
    {rowid}
    ts DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    live_version INTEGER NOT NULL,
    shadow_version INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    agreement DOUBLE PRECISION,        -- classification: share of equal predictions
    mean_abs_diff DOUBLE PRECISION,    -- regression: mean |live - shadow|; classification: of probabilities
    error TEXT,                        -- the shadow's failure, if it failed
    detail TEXT                        -- JSON: per-class agreement
);
CREATE INDEX IF NOT EXISTS shadow_model_ts ON shadow (model, ts);
CREATE TABLE IF NOT EXISTS prediction_batches (
    batch {serial},                    -- the record's key
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the batch was recorded (its predictions' ts)
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT,
    latency_ms DOUBLE PRECISION,       -- time inside the prediction path for the whole request
    rows INTEGER NOT NULL,             -- rows stored: the request's sampled, not erased predictions, in order
    base TEXT,                         -- the request's id base: row k is prediction <base>-<position k>
    positions TEXT,                    -- JSON list: each stored row's position in the request (ascending);
                                       -- NULL when every row is stored (row k is position k)
    subjects TEXT,                     -- JSON list: each stored row's keyed subject hash ('' when missing);
                                       -- NULL for a model without a subject
    features TEXT NOT NULL,            -- JSON list: the stored features, in the order of ``inputs``
    inputs TEXT NOT NULL,              -- JSON list of columns, one per feature: a list of ``rows`` values, or a
                                       -- descriptor of numbers in ``arrays`` (service.store.columns);
                                       -- pii features hashed or absent (never raw)
    outputs TEXT NOT NULL,             -- JSON: the ``rows`` predictions, as a list or a descriptor
    probabilities TEXT,                -- JSON: ``rows`` lists in the model's class order, or a descriptor
                                       -- of a rows x classes matrix; NULL without probabilities
    arrays {bytes},                    -- the numeric columns' little-endian bytes, where the descriptors
                                       -- point; NULL in a record with none (and every record from before)
    arrays_ref TEXT                    -- SQLite: where a large record keeps those bytes instead, in a file
                                       -- beside the database (service.store.blobs); NULL otherwise
);
CREATE INDEX IF NOT EXISTS prediction_batches_ts ON prediction_batches (ts);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,               -- the prediction id; the first label recorded wins
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the label arrived
    label TEXT NOT NULL,               -- JSON value: the ground truth
    model TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_model_ts ON feedback (model, ts);
CREATE TABLE IF NOT EXISTS store_secrets (
    name TEXT PRIMARY KEY,             -- e.g. subject-key: what the secret is for
    value TEXT NOT NULL                -- hex; made once by the first process that needs it
);
CREATE TABLE IF NOT EXISTS maintenance (
    job TEXT PRIMARY KEY,              -- e.g. retention
    last_run DOUBLE PRECISION NOT NULL -- unix seconds the job last ran to the end, in any process
);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,            -- 1, 2, 3, ...: given by the one writer under the "audit" lock
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds
    actor TEXT NOT NULL,               -- key:<id>, cli:<user>, auto-rollback, anonymous, ...
    action TEXT NOT NULL,              -- e.g. label.set, key.create, artifact.refused, auth.denied
    target TEXT NOT NULL,              -- what it applied to: a model, a key id, a route
    details TEXT NOT NULL,             -- JSON object
    prev_hash TEXT NOT NULL,           -- the previous record's hash (64 zeros for the first)
    hash TEXT NOT NULL                 -- sha256 of prev_hash and this record's canonical content
);
-- a worker reloading registry.json looks up the newest anchor of one model: without this index
-- that walks every audit record (27-53 ms behind 100,000 unrelated ones, on each reload)
CREATE INDEX IF NOT EXISTS audit_target_seq ON audit (target, seq);
"""

#: Indexes on the columns a database made before batch records gains (``service.store.migration``).
#: ``(model, base)`` is unique: a batch written twice (a replay) stays one record. ``rows`` is in the
#: window index so the rows of the newest batches, and of the whole log, are summed from the index.
BATCH_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS prediction_batches_model_base ON prediction_batches (model, base);
CREATE INDEX IF NOT EXISTS prediction_batches_model_version_ts ON prediction_batches (model, version, ts, rows);
"""
#: Columns of ``prediction_batches`` a database made before batch records (or before binary
#: columns, for ``arrays``) lacks, with their DDL types.
BATCH_COLUMNS_ADDED = {"base": "TEXT", "positions": "TEXT", "subjects": "TEXT", "arrays": "{bytes}", "arrays_ref": "TEXT"}


def split_id(prediction_id: str) -> tuple[str, int] | None:
    """Return a prediction id's (base, position), or None when it is not ``<base>-<position>``."""
    base, _, position = prediction_id.rpartition("-")
    if not base or not position.isdigit() or not position.isascii() or len(position) > 9:
        return None
    return base, int(position)


def stored_positions(rows: int, positions: list[int] | None) -> list[int]:
    """Each stored row's position in its request: ``positions``, or 0..rows-1 when it is None."""
    return list(range(rows)) if positions is None else positions


def ids_of(base: str, rows: int, positions: list[int] | None) -> list[str]:
    """The prediction ids of a batch record's stored rows, in row order."""
    return [f"{base}-{i}" for i in stored_positions(rows, positions)]


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    ts: float
    model: str
    version: int | None
    role: str
    status: int
    latency_ms: float
    rows: int
    fallback_from: int | None = None
    error: str | None = None
    summary: str | None = None


@dataclass(frozen=True)
class ShadowRecord:
    ts: float
    model: str
    live_version: int
    shadow_version: int
    rows: int
    agreement: float | None
    mean_abs_diff: float | None
    error: str | None = None
    detail: str | None = None


REQUEST_COLUMNS = tuple(f.name for f in fields(RequestRecord))
SHADOW_COLUMNS = tuple(f.name for f in fields(ShadowRecord))
