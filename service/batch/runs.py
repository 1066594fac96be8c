"""The record of batch runs in the store, and each run's audit record.

``batch_runs`` holds one row per run, written when it starts (status ``running``) and updated
when it ends (``done``, ``stopped`` at its rejects threshold, ``failed``); a resumed run
updates its own row. The audit record (``batch.score``, target ``model:<name>``) says who ran
it, which file by hash, which version, and the counts: one per run that ends, resumed or not.
Both are the operator's word that a file was scored, so a store that cannot take them is said
on stderr by the caller, never hidden. No Flask.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from service.security import audit

ACTION = "batch.score"
TARGET = "model:"  # as registry changes name a model in the trail
RUNNING, DONE, STOPPED, FAILED = "running", "done", "stopped", "failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_runs (
    run_id TEXT PRIMARY KEY,           -- also the base of the run's prediction ids: <run_id>-<row index>
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    label TEXT,                        -- the label the version was resolved by; NULL when pinned
    actor TEXT NOT NULL,               -- cli:<OS user>
    input TEXT NOT NULL,               -- the input file's name, as given
    input_sha256 TEXT NOT NULL,
    rows INTEGER NOT NULL,             -- rows read so far
    scored INTEGER NOT NULL,
    rejects INTEGER NOT NULL,
    started DOUBLE PRECISION NOT NULL, -- unix seconds
    finished DOUBLE PRECISION,         -- unix seconds; NULL while running (or killed)
    status TEXT NOT NULL               -- running | done | stopped | failed
);
CREATE INDEX IF NOT EXISTS batch_runs_model_started ON batch_runs (model, started);
"""
COLUMNS = ("run_id", "model", "version", "label", "actor", "input", "input_sha256", "rows", "scored", "rejects",
           "started", "finished", "status")


@dataclass(frozen=True)
class Run:
    run_id: str
    model: str
    version: int
    label: str | None
    actor: str
    input: str
    input_sha256: str
    started: float


def started(store: Any, run: Run, *, rows: int = 0, scored: int = 0, rejects: int = 0) -> None:
    """Record a run as running (a resumed one keeps its row and its start); raise ``sqlite3.Error``."""
    store.create_tables(SCHEMA)
    sql = store.insert_sql("batch_runs", COLUMNS, conflict="ignore", key=("run_id",))
    with store.transaction() as db:
        db.execute(sql, (run.run_id, run.model, run.version, run.label, run.actor, run.input, run.input_sha256,
                         rows, scored, rejects, run.started, None, RUNNING))
        db.execute("UPDATE batch_runs SET status = ?, finished = NULL WHERE run_id = ?", (RUNNING, run.run_id))


def finished(store: Any, run: Run, status: str, *, rows: int, scored: int, rejects: int,
             details: dict[str, Any] | None = None) -> None:
    """Record how a run ended, and write its audit record (with ``details`` added); raise ``sqlite3.Error``."""
    now = time.time()
    with store.transaction() as db:
        db.execute("UPDATE batch_runs SET rows = ?, scored = ?, rejects = ?, finished = ?, status = ? "
                   "WHERE run_id = ?", (rows, scored, rejects, now, status, run.run_id))
    audit.record(store, run.actor, ACTION, f"{TARGET}{run.model}", {
        "run_id": run.run_id, "version": run.version, "label": run.label, "input": run.input,
        "input_sha256": run.input_sha256, "rows": rows, "scored": scored, "rejects": rejects, "status": status,
        **(details or {})})


def read(store: Any, run_id: str) -> dict[str, Any] | None:
    """The stored row of one run, by column name, or None."""
    rows = store.fetch(f"SELECT {', '.join(COLUMNS)} FROM batch_runs WHERE run_id = ?", (run_id,))  # noqa: S608  # nosec B608  # constants and "?" only
    return dict(zip(COLUMNS, rows[0], strict=True)) if rows else None
