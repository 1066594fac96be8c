"""Move a SQLite snapshot's rows into a store of any backend, through the ``Store`` front door.

For a restore onto PostgreSQL from a SQLite backup, where the file cannot simply be put in place.
The target's schema is the server's own (``Store`` makes it, with the alert and spool tables
added here); rows go in table by table, a batch per transaction, in key order, columns matched
by name. ``{any}`` columns are packed for the target (JSON text on PostgreSQL), and identity keys
are kept (``OVERRIDING SYSTEM VALUE``, then the sequence moved past them), so a batch record keeps
its number. No Flask.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from service.batch import runs
from service.monitoring import alerts, outbox
from service.store import Store, records
from service.store.sqlite import values_clause

#: Every table's DDL the server creates; the target gets them all before rows arrive.
DDLS = (records.SCHEMA, alerts.SCHEMA, outbox.MARKS_DDL, runs.SCHEMA)
BATCH = 1000
IDENTITY = ("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? AND is_identity = 'YES'")


def any_columns() -> set[tuple[str, str]]:
    """The (table, column) pairs declared ``{any}``: stored as given on SQLite, as JSON text on PostgreSQL."""
    found = set()
    for ddl in DDLS:
        for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", ddl, re.S):
            found |= {(table, column) for column in re.findall(r"^\s*(\w+) \{any\}", body, re.M)}
    return found


def copy_into(source: Path, target: Store, *, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Insert every row of the SQLite file ``source`` into ``target``'s tables; return the count per table."""
    for ddl in DDLS:
        target.create_tables(ddl)
    packed = any_columns()
    db = sqlite3.connect(f"file:{Path(source).absolute()}?mode=ro", uri=True)
    counts = {}
    try:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                              "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for table in names:
            if table in skip:
                continue
            counts[table] = _copy_table(db, target, table, packed)
    finally:
        db.close()
    return counts


def _copy_table(db: sqlite3.Connection, target: Store, table: str, packed: set[tuple[str, str]]) -> int:
    try:
        wanted = set(target.column_names(table))
    except sqlite3.Error:
        return 0  # a table the server no longer has (a layout older than the target's)
    columns = [c[0] for c in db.execute(f"SELECT * FROM {table} LIMIT 0").description if c[0] in wanted]  # noqa: S608  # nosec B608  # names from sqlite_master
    identity = [] if target.path is not None else [c for (c,) in target.fetch(IDENTITY, (table,)) if c in columns]
    values = ("OVERRIDING SYSTEM VALUE " if identity else "") + values_clause(tuple(columns))
    insert = target.insert_sql(table, columns, select=values)
    pack = [(table, column) in packed for column in columns]
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")  # noqa: S608  # nosec B608  # names from the schema
    count = 0
    while rows := cursor.fetchmany(BATCH):
        if any(pack):
            rows = [tuple(target.pack(v) if p else v for v, p in zip(row, pack, strict=True)) for row in rows]
        with target.transaction() as conn:
            conn.executemany(insert, rows)
        count += len(rows)
    for column in identity:
        if count:  # the next row the server writes must not take a number a restored row holds
            # table and column are the store's own constant names; the values go as parameters
            target.fetch(f"SELECT setval(pg_get_serial_sequence(?, ?), (SELECT max({column}) FROM {table}))",  # noqa: S608  # nosec B608  # constant names
                         (table, column))
    return count
