"""How the shared store talks to each database: SQLite (embedded, the default) or PostgreSQL.

``service.store`` writes every query once, in sqlite3's style; a dialect holds what differs:
connecting, beginning a write transaction (and its locks), DDL types, conflict clauses, a JSON
array parameter read as rows, and turning PostgreSQL's errors into ``sqlite3.Error`` so callers
need one ``except``. No Flask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIN_CONNECT_TIMEOUT = 2  # libpq reads 1 as 2 seconds anyway


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
    DDL = {"rowid": "", "any": "", "serial": "INTEGER PRIMARY KEY"}  # ``any``: no declared type, values as given

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout  # seconds a writer waits for the lock (sqlite3's busy timeout)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        db.row_factory = sqlite3.Row
        return db

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
        return f"{verb} INTO {table} ({', '.join(columns)}) {select or _values(columns)}"

    def json_elements(self) -> str:
        return "json_each(?) AS j"

    def uncompressed(self, db: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> None:
        pass  # SQLite never compresses

    def pack(self, value: Any) -> Any:
        return value

    def unpack(self, stored: Any) -> Any:
        return stored

    def hold_lock(self, name: str) -> None:
        raise NotImplementedError("SQLite elects with a lock file: see Store.lock_path")


class PostgresDialect:
    """PostgreSQL through psycopg 3: writers side by side, explicit row ids, advisory locks."""

    DDL = {"rowid": "rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,", "any": "TEXT",  # ``any``: JSON text
           "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}

    def __init__(self, url: str, timeout: float):
        import psycopg  # only PostgreSQL users pay for the import

        self.psycopg = psycopg
        self.url = url
        self.path = None
        self.timeout = timeout  # seconds a write statement may run, lock waits included
        self.connect_timeout = max(MIN_CONNECT_TIMEOUT, math.ceil(timeout))
        # Most specific first: QueryCanceled (a statement timeout) is an OperationalError.
        self._errors = ((psycopg.IntegrityError, sqlite3.IntegrityError), (psycopg.OperationalError, sqlite3.OperationalError),
                        (psycopg.DataError, sqlite3.DataError), (psycopg.ProgrammingError, sqlite3.ProgrammingError),
                        (psycopg.InterfaceError, sqlite3.InterfaceError))

    def connect(self) -> PgConnection:
        conn = self.psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout,
                                    application_name="prediction-server", row_factory=_mapping_rows)
        return PgConnection(conn)

    def usable(self, db: PgConnection) -> bool:
        return not (db.conn.closed or db.conn.broken)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Raise psycopg's errors as sqlite3's (the store's one family), the original as the cause."""
        try:
            yield
        except self.psycopg.Error as exc:
            kind = next((ours for theirs, ours in self._errors if isinstance(exc, theirs)), sqlite3.DatabaseError)
            raise kind(f"{type(exc).__name__}: {exc}".strip()) from exc

    def script(self, db: PgConnection, ddl: str) -> None:
        with self.begin(db, "schema", None):  # concurrent CREATE ... IF NOT EXISTS can collide
            db.conn.execute(ddl)

    @contextmanager
    def begin(self, db: PgConnection, lock: str | None, timeout: float | None) -> Iterator[PgConnection]:
        ms = round((self.timeout if timeout is None else timeout) * 1000)
        prelude = f"BEGIN; SET LOCAL statement_timeout = {ms}"  # one round trip; no parameters, so no injection
        if lock is not None:
            prelude += f"; SELECT pg_advisory_xact_lock({lock_key(lock)})"
        db.conn.execute(prelude)
        try:
            yield db
            db.conn.execute("COMMIT")
        except BaseException:
            if self.usable(db) and db.conn.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE:
                db.conn.execute("ROLLBACK")
            raise

    def fetch(self, db: PgConnection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        from psycopg.rows import tuple_row

        return db.conn.cursor(row_factory=tuple_row).execute(_pg_sql(sql), params).fetchall()

    def insert_sql(self, table: str, columns: tuple[str, ...], conflict: str | None, key: tuple[str, ...],
                   select: str | None = None) -> str:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) {select or _values(columns)}"
        if conflict == "ignore":
            return sql + " ON CONFLICT DO NOTHING"
        if conflict == "replace":
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
            return sql + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        return sql

    def json_elements(self) -> str:
        return ("(SELECT value, ordinality - 1 AS key"
                " FROM json_array_elements_text(CAST(? AS json)) WITH ORDINALITY) AS j")

    def uncompressed(self, db: PgConnection, table: str, columns: tuple[str, ...]) -> None:
        # TOAST compresses long values with pglz by default: ~25 ms per MB written, more than the
        # space is worth for these columns. EXTERNAL keeps them out of line, uncompressed. Set once.
        with self.begin(db, "schema", None):
            names = [row[0] for row in db.conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(%s AS regclass) AND attstorage <> 'e'"
                " AND attname = ANY(%s)", (table, list(columns))).fetchall()]
            if names:
                db.conn.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {n} SET STORAGE EXTERNAL" for n in names))

    def pack(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as exc:  # what sqlite3 raises for a value it cannot bind
            raise sqlite3.ProgrammingError(f"cannot store {type(value).__name__}: {exc}") from None

    def unpack(self, stored: Any) -> Any:
        return None if stored is None else json.loads(stored)

    def hold_lock(self, name: str) -> AdvisoryLock | None:
        conn = self.psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout,
                                    application_name="prediction-server-lock")
        try:
            # Not the key of ``begin``'s lock of the same name: holding this must not block those.
            key = lock_key(f"session:{name}")
            held = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if not held:
            conn.close()
            return None
        return AdvisoryLock(conn, key, self.psycopg.Error)


class PgConnection:
    """A psycopg connection that takes the store's sqlite3-style SQL (``?`` placeholders)."""

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(_pg_sql(sql), [tuple(row) for row in rows])
        return cursor

    def close(self) -> None:
        self.conn.close()


class AdvisoryLock:
    """A PostgreSQL session lock, held by its own connection for as long as that connection lives."""

    def __init__(self, conn: Any, key: int, error: type[Exception]):
        self.conn = conn
        self.key = key
        self._error = error

    @property
    def closed(self) -> bool:
        """Tell whether the lock is gone (closed, or its session ended): asks the server."""
        if self.conn.closed:
            return True
        try:
            self.conn.execute("SELECT 1")
        except self._error:
            self.conn.close()
            return True
        return False

    def close(self) -> None:
        """Release the lock now (a closed session releases it too, but only once its backend exits)."""
        if not self.conn.closed:
            try:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except self._error:
                pass  # the session is gone, and the lock with it
        self.conn.close()


class Row(tuple):
    """A result row read by position or by column name, like ``sqlite3.Row``."""

    def __new__(cls, values: Iterable[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self._names)


def _mapping_rows(cursor: Any) -> Callable[[Iterable[Any]], Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


def _values(columns: tuple[str, ...]) -> str:
    return f"VALUES ({', '.join('?' * len(columns))})"


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    # psycopg's placeholders are %s, so a literal % (as in LIKE 'a-%') is written %%.
    return sql.replace("%", "%%").replace("?", "%s")


def lock_key(name: str) -> int:
    """Return the signed 64-bit advisory lock key for ``name`` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
