"""How the shared store talks to each database: SQLite (embedded, the default) or PostgreSQL.

``service.store`` writes every query once, in sqlite3's style; a dialect holds what differs:
connecting, beginning a write transaction (and its locks), DDL types, conflict clauses, a JSON
array parameter read as rows, and turning PostgreSQL's errors into ``sqlite3.Error`` so callers
need one ``except``. This module holds SQLite's dialect and what both share; PostgreSQL's lives in
``service.store.postgres``. No Flask.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

#: Connections inherited across a fork: kept referenced, because closing one in the child would
#: end the parent's session (psycopg leaves them open when collected in a child anyway).
INHERITED: list[Any] = []


def close_all(connections: list[tuple[int, Any]]) -> None:
    for pid, db in connections:
        if pid == os.getpid():  # never another process's: see INHERITED
            db.close()
    connections.clear()


class SQLiteDialect:
    """SQLite in WAL mode: a file, an implicit ``rowid``, one writer at a time."""

    # ``serial``: a key the database numbers, stable for references (an INTEGER PRIMARY KEY is
    # the rowid itself; an undeclared rowid may be renumbered by VACUUM).
    DDL = {"rowid": "", "any": "", "serial": "INTEGER PRIMARY KEY",  # ``any``: no declared type, values as given
           "bytes": "BLOB"}

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout  # seconds a writer waits for the lock (sqlite3's busy timeout)

    def connect(self) -> sqlite3.Connection:
        try:  # here, not at construction: a directory that cannot be made yet may be later
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot create the directory of {self.path}: {exc}") from exc
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:  # a file that is not a database fails here: its connection is closed, not left to the collector
            self._wal(db)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        except BaseException:
            db.close()
            raise
        db.row_factory = sqlite3.Row
        return db

    def _wal(self, db: sqlite3.Connection) -> None:
        """Switch to WAL, waiting like any writer: the switch does not call SQLite's busy handler, so
        two workers opening a new database at once would otherwise see "database is locked" at once."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def usable(self, db: sqlite3.Connection) -> bool:
        return True

    def errors(self) -> AbstractContextManager[None]:
        return nullcontext()

    def script(self, db: sqlite3.Connection, ddl: str) -> None:
        db.executescript(ddl)

    @contextmanager
    def begin(self, db: sqlite3.Connection, lock: str | None, timeout: float | None) -> Iterator[sqlite3.Connection]:
        # The write lock is global, so ``lock`` needs nothing more; another timeout is another
        # busy wait, for this transaction only.
        if timeout is not None:
            db.execute(f"PRAGMA busy_timeout = {round(timeout * 1000)}")
        try:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read lock
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may already have rolled back (e.g. on a full disk)
                    db.execute("ROLLBACK")
                raise
        finally:
            if timeout is not None:
                db.execute(f"PRAGMA busy_timeout = {round(self.timeout * 1000)}")

    def fetch(self, db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cursor = db.cursor()
        cursor.row_factory = None
        return cursor.execute(sql, params).fetchall()

    def insert_sql(self, table: str, columns: tuple[str, ...], conflict: str | None, key: tuple[str, ...],
                   select: str | None = None) -> str:
        verb = {None: "INSERT", "ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[conflict]
        return f"{verb} INTO {table} ({', '.join(columns)}) {select or values_clause(columns)}"

    def json_elements(self) -> str:
        return "json_each(?) AS j"

    def json_pairs(self) -> str:
        return "(SELECT value ->> 0 AS a, value ->> 1 AS b, key FROM json_each(?)) AS j"

    def bucket(self, column: str, seconds: float) -> str:
        """SQL for floor(``column`` / ``seconds``) of a non-negative column, as an integer."""
        return f"CAST({column} / {float(seconds)!r} AS INTEGER)"  # truncation: the floor, for ts >= 0

    def uncompressed(self, db: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> None:
        pass  # SQLite never compresses

    def pack(self, value: Any) -> Any:
        return value

    def unpack(self, stored: Any) -> Any:
        return stored

    def hold_lock(self, name: str) -> None:
        raise NotImplementedError("SQLite elects with a lock file: see Store.lock_path")


def values_clause(columns: tuple[str, ...]) -> str:
    return f"VALUES ({', '.join('?' * len(columns))})"
