"""Bring a database of an earlier prediction log layout to batch records, in short steps.

Until batch records, every logged prediction also had a ``predictions`` row (id, ts, model,
version, batch, row_index, subject), and before ``prediction_batches`` existed that row held the
prediction's inputs, output and probabilities as JSON itself (the "legacy" layout). Both now
become batch records: ``prediction_batches`` gains ``base``, ``positions``, ``subjects`` (and
``arrays``, the binary columns of records written since), and
the ``predictions`` rows are folded into them, oldest first, a few thousand rows per transaction
(all rows of a batch share its model, version and timestamp, so a step never splits one), then
the emptied table is dropped. Every process runs this at start before its first read or write,
so none reads a half-migrated log; processes starting together share the work. This module never
sees a request; no Flask.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from service.store.records import BATCH_COLUMNS_ADDED, BATCH_INDEXES, split_id

log = logging.getLogger(__name__)

#: ``predictions`` rows folded per transaction, about: short write locks, serving writes interleave.
STEP_ROWS = 2000
LOCK = "migrate"
FIND_TABLE = {"sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'predictions'",
              "postgres": "SELECT tablename FROM pg_tables WHERE tablename = 'predictions' AND schemaname = current_schema()"}


def upgrade(store: Any) -> None:
    """Give ``prediction_batches`` the batch-record columns and indexes, then fold in ``predictions``."""
    # Called while the store sets itself up: its private transactions, since the public ones wait for that.
    names = store.column_names("prediction_batches")
    if any(column not in names for column in BATCH_COLUMNS_ADDED):
        with store._transaction(lock="schema") as db:  # workers starting together: one adds them
            names = store.column_names("prediction_batches", db)
            for column, kind in BATCH_COLUMNS_ADDED.items():
                if column not in names:
                    db.execute(f"ALTER TABLE prediction_batches ADD COLUMN {column} {kind.format(**store.dialect.DDL)}")
    store.create_tables(BATCH_INDEXES)
    with store._transaction() as db:
        if not _has_predictions(store, db):
            return
    folded = dropped = 0
    while True:
        with store._transaction(lock=LOCK) as db:
            if not _has_predictions(store, db):
                break
            step = _step(db, store.column_names("predictions", db))
            if step is None:
                db.execute("DELETE FROM prediction_batches WHERE base IS NULL")  # no prediction points at them
                db.execute("DROP TABLE predictions")
                break
            folded, dropped = folded + step[0], dropped + step[1]
    if folded or dropped:
        log.warning("prediction log moved to batch records", extra={"rows": folded, "dropped": dropped})


def _has_predictions(store: Any, db: Any) -> bool:
    return bool(db.execute(FIND_TABLE["sqlite" if store.path is not None else "postgres"]).fetchall())


def _step(db: Any, names: list[str]) -> tuple[int, int] | None:
    """Fold the oldest rows of one model version into batch records; None when none is left."""
    first = db.execute("SELECT model, version FROM predictions ORDER BY model, version, ts LIMIT 1").fetchall()
    if not first:
        return None
    model, version = first[0][0], first[0][1]
    legacy = "inputs" in names
    # A legacy table may lack the reference columns (only added by the code that came after it).
    wanted = ", ".join(["rowid", "id", "ts", *(c if c in names else "NULL" for c in ("batch", "row_index", "subject")),
                        *(("inputs", "output", "probabilities") if legacy else ())])
    select = f"SELECT {wanted} FROM predictions WHERE model = ? AND version = ?"  # nosec B608  # noqa: S608  column names are constants
    bound = db.execute("SELECT ts FROM predictions WHERE model = ? AND version = ? ORDER BY ts LIMIT 1 OFFSET ?",
                       (model, version, STEP_ROWS)).fetchall()
    if not bound:
        rows = db.execute(select, (model, version)).fetchall()
    else:  # whole timestamps only: the rows of one batch are never split between steps
        rows = db.execute(select + " AND ts < ?", (model, version, bound[0][0])).fetchall()
        rows = rows or db.execute(select + " AND ts = ?", (model, version, bound[0][0])).fetchall()
    groups: dict[tuple[Any, str], list[Any]] = {}
    dropped = 0
    for row in rows:
        parsed = split_id(row[1])
        if parsed is None:
            dropped += 1  # not an id this server issues: nothing could look it up
            continue
        groups.setdefault((row[3], parsed[0]), []).append((parsed[1], row))
    for (batch, base), members in groups.items():
        if db.execute("SELECT 1 FROM prediction_batches WHERE model = ? AND base = ?", (model, base)).fetchall():
            dropped += len(members)  # a base logged twice (a retry overlapping its first write): first wins
            continue
        _fold(db, model, version, batch, base, members, legacy)
    db.executemany("DELETE FROM predictions WHERE rowid = ?", [(row[0],) for row in rows])
    return len(rows) - dropped, dropped


def _fold(db: Any, model: str, version: int, batch: int | None, base: str, members: list[Any], legacy: bool) -> None:
    """Make one batch record of the rows of one base: the batch they point at, or a new one."""
    stored = db.execute("SELECT rows, inputs, outputs, probabilities FROM prediction_batches WHERE batch = ?",
                        (batch,)).fetchall() if batch is not None else []
    if stored and all(row[4] is not None for _, row in members):
        members.sort(key=lambda member: member[1][4])
        size, inputs, outputs, probabilities = stored[0]
        keep = [row[4] for _, row in members]
        positions = [position for position, _ in members]
        subjects = _subjects(members)
        if keep != list(range(size)):  # rows no prediction points at (an overlapping retry): drop them
            inputs = _dumps([_take(column, keep) for column in orjson.loads(inputs)])
            outputs = _dumps(_take(orjson.loads(outputs), keep))
            probabilities = None if probabilities is None else _dumps(_take(orjson.loads(probabilities), keep))
        db.execute("UPDATE prediction_batches SET rows = ?, base = ?, positions = ?, subjects = ?, inputs = ?,"
                   " outputs = ?, probabilities = ? WHERE batch = ?",
                   (len(keep), base, _positions(positions), subjects, inputs, outputs, probabilities, batch))
        return
    # A legacy row keeps its own inputs; a row whose batch was purged keeps only its id.
    members.sort(key=lambda member: member[0])
    values = [orjson.loads(row[6]) if legacy and row[6] is not None and row[3] is None else {} for _, row in members]
    names = list(dict.fromkeys(name for value in values if isinstance(value, dict) for name in value))
    inputs = [[value.get(name) if isinstance(value, dict) else None for value in values] for name in names]
    outputs = [orjson.loads(row[7]) if legacy and row[7] is not None and row[3] is None else None for _, row in members]
    probabilities = [orjson.loads(row[8]) if legacy and row[8] is not None and row[3] is None else None
                     for _, row in members]
    db.execute("INSERT INTO prediction_batches (ts, model, version, rows, base, positions, subjects, features, inputs,"
               " outputs, probabilities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (members[0][1][2], model, version, len(members), base, _positions([p for p, _ in members]),
                _subjects(members), _dumps(names), _dumps(inputs), _dumps(outputs),
                None if all(p is None for p in probabilities) else _dumps(probabilities)))


def _positions(positions: list[int]) -> str | None:
    return None if positions == list(range(len(positions))) else _dumps(positions)


def _subjects(members: list[Any]) -> str | None:
    found = [row[5] for _, row in members]
    return None if all(s is None for s in found) else _dumps([s or "" for s in found])


def _take(values: list[Any], keep: list[int]) -> list[Any]:
    # A column shorter than the batch (written by another schema) is left to read as missing.
    return [values[i] for i in keep] if keep and len(values) > keep[-1] else values


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
