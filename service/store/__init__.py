"""The shared record of what the server did: requests, predictions, shadow comparisons, feedback.

Workers and replicas share it, so figures read from it (comparison, monitoring, automatic
rollback) cover the traffic of all of them. SQLite in WAL mode by default: embedded, nothing
to install, many readers and one short writer at a time. A ``postgresql://`` URL selects a
PostgreSQL server (psycopg 3) for replicas that share one. Writing never raises into a request:
a full disk, a locked database or a stopped server is logged and counted, and serving goes on.
Nor does opening it: a database that is down (or a directory not writable) when the store is
built is logged once, and the schema is created on the first read or write that finds the
database back (each use retries until one succeeds), so a server can boot during an outage.

The queries are written once, in sqlite3's style (``?`` placeholders); a dialect object holds
what differs between the two (connecting, beginning a write transaction, DDL types, insert
conflicts). Either backend's failures reach callers as ``sqlite3.Error``, so one ``except``
covers both. No Flask.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple
from pathlib import Path
from typing import Any

from service.store import failures, traffic
from service.store.blobs import BlobFiles
from service.store.postgres import PostgresDialect
from service.store.records import (  # noqa: F401  (the record types are part of the store's surface)
    REQUEST_COLUMNS,
    SCHEMA,
    SHADOW_COLUMNS,
    RequestRecord,
    ShadowRecord,
)
from service.store.sqlite import INHERITED, SQLiteDialect, close_all

log = logging.getLogger(__name__)

#: Rows deleted per transaction by ``purge``: short write locks, so serving writes interleave.
PURGE_BATCH = 2000
#: SQLite's bound-parameter limit is 32766 since 3.32; stay well below it.
MAX_PARAMS = 900
#: After a failure is logged, further failures stay quiet this long (a burst), but are counted.
FAILURE_LOG_SECONDS = 60.0
#: URL schemes of the backends: SQLite (a file) and PostgreSQL (a server).
SQLITE_SCHEME = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Store:
    """The shared database (SQLite file or PostgreSQL server); a connection per process and thread."""

    def __init__(self, path: Path | str | None = None, timeout: float = 5.0, *, url: str | None = None):
        if (path is None) == (url is None):
            raise ValueError("give a SQLite path or a PostgreSQL url")
        self.dialect: SQLiteDialect | PostgresDialect = (
            SQLiteDialect(Path(path), timeout) if url is None else PostgresDialect(url, timeout))
        self.path = self.dialect.path  # the SQLite file; None on PostgreSQL
        #: SQLite: the files beside the database holding large records' column bytes (None on PostgreSQL)
        self.blobs = BlobFiles(Path(f"{self.path}.blobs")) if self.path is not None else None
        self.timeout = timeout
        self.write_failures = 0  # per process: every failed write since start
        #: Told (table, reason) of every failed write, reason one of ``failures.REASONS`` (a metric).
        self.on_write_failure: Callable[[str, str], None] | None = None
        self._burst_failures = 0
        self._last_failure_log: float | None = None
        self._failure_lock = threading.Lock()
        self._local = threading.local()
        self._opened: list[tuple[int, Any]] = []  # (pid, connection) this store opened, closed with it
        #: One lock per open connection, held while its thread uses it: ``close`` from another thread
        #: waits for that use to end, since closing a SQLite connection mid-statement crashes the process.
        self._in_use: dict[int, threading.RLock] = {}
        self._finalizer = weakref.finalize(self, close_all, self._opened)
        # Schema steps not done yet, in order: run before any read or write until each succeeds.
        self._pending: list[Callable[[], None]] = [self._set_up]
        self._schema_lock = threading.Lock()
        self._schema_failed = False  # a failure was logged; the next success says so
        self._try_schema()

    def _set_up(self) -> None:
        self.create_tables(SCHEMA)
        from service.store import migration

        migration.upgrade(self)  # a database of an earlier prediction log layout: batch records now
        with self.dialect.errors(), self._connection() as db:  # after the upgrade: it may add ``arrays``
            self.dialect.uncompressed(db, "prediction_batches", ("inputs", "outputs", "probabilities", "arrays"))

    def ensure_tables(self, ddl: str) -> None:
        """Have ``ddl``'s tables (as ``create_tables``): created now if the database answers, else
        before the next read or write, retried until done. Never raises (a database may be down)."""
        with self._schema_lock:
            self._pending.append(lambda: self.create_tables(ddl))
            waiting = len(self._pending) > 1  # the database already failed: no new attempt now
        if not waiting:
            self._try_schema()

    def _try_schema(self) -> None:
        try:
            self._ready()
        except sqlite3.Error:
            pass  # logged by _ready; every use tries again

    def _ready(self) -> None:
        """Run the schema steps still pending; raise ``sqlite3.Error`` if one fails (logged once)."""
        if not self._pending:  # the common path: no lock
            return
        with self._schema_lock:
            deadline = time.monotonic() + self.timeout
            while self._pending:
                try:
                    self._pending[0]()
                except sqlite3.Error as exc:
                    if "locked" in str(exc) and time.monotonic() < deadline:
                        time.sleep(0.01)  # workers booting together all create the schema: wait our turn
                        continue
                    if not self._schema_failed:
                        self._schema_failed = True
                        log.error("store schema could not be created; serving goes on, and every read or write "
                                  "tries again", extra={"reason": f"{type(exc).__name__}: {exc}"})
                    raise
                self._pending.pop(0)
            if self._schema_failed:
                self._schema_failed = False
                log.warning("store schema created: the database is back")

    @classmethod
    def from_url(cls, url: str, timeout: float = 5.0) -> Store:
        """Open the store a ``DATABASE_URL`` names: ``sqlite:///relative.db``, ``sqlite:////abs.db`` or
        ``postgresql://user:password@host:port/database`` (``postgres://`` too)."""
        if url.startswith(SQLITE_SCHEME):
            return cls(url[len(SQLITE_SCHEME):], timeout=timeout)
        if url.startswith(POSTGRES_SCHEMES):
            return cls(url=url, timeout=timeout)
        raise ValueError("DATABASE_URL must start with sqlite:///, postgresql:// or postgres:// "
                         "(e.g. sqlite:///var/predictions.db)")

    def close(self, wait: float = 5.0) -> None:
        """Close the connections this process opened; using the store again opens new ones.

        A connection another thread is using is closed once that use ends (waiting up to ``wait``
        seconds), or left to that thread when it does not end in time: never closed under it.
        """
        kept = []
        for pid, db in list(self._opened):
            lock = self._in_use.get(id(db))
            if pid != os.getpid() or lock is None:
                continue
            if lock.acquire(timeout=wait):
                try:
                    db.close()
                finally:
                    lock.release()
                self._in_use.pop(id(db), None)
            else:
                kept.append((pid, db))
        self._opened[:] = kept
        self._local = threading.local()
        if self.blobs is not None:
            try:
                self.blobs.close()
            except OSError:
                log.exception("closing the blob files failed")

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        # Connections must not cross a fork: key the cached one by pid. A PostgreSQL one that
        # broke (server restart) is replaced on the next use.
        cached = getattr(self._local, "db", None)
        if cached is None or self._local.pid != os.getpid() or not self.dialect.usable(cached):
            if cached is not None and self._local.pid != os.getpid():
                INHERITED.append(cached)  # the parent's: never close it here, nor let it be collected
            elif cached is not None:  # broken: let it go
                self._opened.remove((self._local.pid, cached))
                self._in_use.pop(id(cached), None)
                cached.close()
            self._local.db = None
            self._local.db, self._local.pid = self.dialect.connect(), os.getpid()
            self._in_use[id(self._local.db)] = threading.RLock()
            self._opened.append((os.getpid(), self._local.db))
        db = self._local.db
        lock = self._in_use.get(id(db))
        if lock is None:  # closed by another thread's close() since this thread cached it: reconnect
            self._local.db = None
            with self._connection() as fresh:
                yield fresh
            return
        with lock:
            yield db

    def create_tables(self, ddl: str) -> None:
        """Run ``ddl`` (``CREATE ... IF NOT EXISTS`` statements with ``{rowid}`` and ``{any}`` fields) now;
        raise ``sqlite3.Error`` if the database fails (``ensure_tables`` defers instead)."""
        with self.dialect.errors(), self._connection() as db:
            self.dialect.script(db, ddl.format(**self.dialect.DDL))

    def column_names(self, table: str, db: Any = None) -> list[str]:
        """Return ``table``'s columns, read on ``db`` (a transaction's) or on a connection of its own."""
        sql = f"SELECT * FROM {table} LIMIT 0"  # nosec B608  # noqa: S608  our own table names
        if db is not None:
            return _names(db.execute(sql).description)
        with self.dialect.errors(), self._connection() as own:
            return _names(own.execute(sql).description)

    @contextmanager
    def transaction(self, lock: str | None = None, timeout: float | None = None) -> Iterator[Any]:
        """Run a block in one write transaction; raise ``sqlite3.Error`` on failure.

        SQLite takes its one write lock at the start (``BEGIN IMMEDIATE``). PostgreSQL writers
        run side by side, so a block that reads then decides names a ``lock``: such blocks run
        one at a time per name. ``timeout`` overrides the store's for this transaction.
        """
        self._ready()
        with self._transaction(lock, timeout) as db:
            yield db

    @contextmanager
    def _transaction(self, lock: str | None = None, timeout: float | None = None) -> Iterator[Any]:
        with self.dialect.errors(), self._connection() as db, self.dialect.begin(db, lock, timeout):
            yield db

    def write(self, what: str, work: Callable[[Any], Any]) -> bool:
        """Run ``work`` in one transaction; on any failure log it once per burst, count it, return False."""
        try:
            with self.transaction() as db:
                work(db)
        except Exception as exc:  # full disk, locked past the timeout, server down, bad value, ...
            self.write_failed(what, exc)
            return False
        self.write_succeeded()
        return True

    def write_failed(self, what: str, exc: BaseException) -> None:
        """Count a failed write (by reason) and log it unless a failure was logged within the current burst."""
        reason = failures.reason_for(exc)
        if self.on_write_failure is not None:
            try:
                self.on_write_failure(what, reason)
            except Exception:  # nosec B110  # noqa: S110  counting must not turn one failure into two
                pass
        with self._failure_lock:
            self.write_failures += 1
            self._burst_failures += 1
            now = time.monotonic()
            quiet = self._last_failure_log is not None and now - self._last_failure_log < FAILURE_LOG_SECONDS
            if not quiet:
                self._last_failure_log = now
        if not quiet:
            log.error("store write failed; serving continues (further failures in this burst are only counted)",
                      extra={"table": what, "reason": reason, "error": f"{type(exc).__name__}: {exc}",
                             "write_failures": self.write_failures})

    def write_succeeded(self) -> None:
        """Note a successful write: the first after failures ends their burst with a log line."""
        if not self._burst_failures:  # the common path: no lock, no log
            return
        with self._failure_lock:
            failed, self._burst_failures, self._last_failure_log = self._burst_failures, 0, None
        if failed:
            log.warning("store writes recovered", extra={"failed_in_burst": failed, "write_failures": self.write_failures})

    def insert_sql(self, table: str, columns: Iterable[str], *, conflict: str | None = None,
                   key: tuple[str, ...] = (), select: str | None = None) -> str:
        """Return an INSERT of ``columns``; on a key conflict ``"ignore"`` keeps the old row, ``"replace"``
        overwrites it (``key`` names the conflicting columns). ``select`` inserts a query's rows instead
        of one row of parameters."""
        return self.dialect.insert_sql(table, tuple(columns), conflict, key, select)

    def json_elements(self) -> str:
        """A FROM item over the elements of one JSON array of strings, a parameter (``?``): ``j.value``,
        each string, and ``j.key``, its index from 0. One statement then inserts thousands
        of rows, with no per-row round trip or parameter binding."""
        return self.dialect.json_elements()

    def json_pairs(self) -> str:
        """Like ``json_elements`` over an array of two-string arrays: ``j.a`` and ``j.b``, each pair's
        strings (NULL for a JSON null), and ``j.key``, its index from 0."""
        return self.dialect.json_pairs()

    def pack(self, value: Any) -> Any:
        """Turn a number, string or None into what an ``{any}`` column stores."""
        return self.dialect.pack(value)

    def unpack(self, stored: Any) -> Any:
        """Read back a value stored with ``pack``."""
        return self.dialect.unpack(stored)

    def lock_path(self, name: str) -> Path | None:
        """Return the lock file for ``name`` next to a SQLite file; None on PostgreSQL (use ``hold_lock``)."""
        return None if self.path is None else self.path.with_name(f"{self.path.name}.{name}.lock")

    def hold_lock(self, name: str) -> Any | None:
        """Take the server-wide lock ``name`` without waiting, held until the returned handle is closed or
        the process dies; None when another holds it. PostgreSQL only (SQLite: ``lock_path``)."""
        with self.dialect.errors():
            return self.dialect.hold_lock(name)

    def _insert(self, table: str, records: Iterable[Any], columns: tuple[str, ...]) -> bool:
        rows = [astuple(r) for r in records]
        if not rows:
            return True
        sql = self.insert_sql(table, columns)
        return self.write(table, lambda db: db.executemany(sql, rows))

    def record_requests(self, records: Iterable[RequestRecord]) -> bool:
        return self._insert("requests", records, REQUEST_COLUMNS)

    def record_shadow(self, records: Iterable[ShadowRecord]) -> bool:
        return self._insert("shadow", records, SHADOW_COLUMNS)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run a read query; rows read by index or column name; raises ``sqlite3.Error``."""
        self._ready()
        with self.dialect.errors(), self._connection() as db:
            return db.execute(sql, params).fetchall()

    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Like ``query`` but with plain tuples: cheaper for thousands of rows."""
        self._ready()
        with self.dialect.errors(), self._connection() as db:
            return self.dialect.fetch(db, sql, params)

    def requests_since(self, model: str, since: float) -> list[sqlite3.Row]:
        """Every request row since ``since``, oldest first: unbounded, so figures use ``traffic``."""
        return self.query("SELECT * FROM requests WHERE model = ? AND ts >= ? ORDER BY ts", (model, since))

    def traffic(self, model: str, since: float, limit: int, *, versions: list[int] | None = None,
                bucket_seconds: float | None = None) -> traffic.Window:
        """Counts of the requests since ``since`` and the newest ``limit`` rows per version
        (``service.store.traffic``): bounded memory however busy the window."""
        return traffic.read(self, model, since, limit, versions=versions, bucket_seconds=bucket_seconds)

    def shadow_since(self, model: str, since: float) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM shadow WHERE model = ? AND ts >= ? ORDER BY ts", (model, since))

    def purge(self, older_than_seconds: float, now: float | None = None, batch: int = PURGE_BATCH) -> dict[str, int]:
        """Delete rows older than the cut-off in short batches; return the count deleted per table
        (``service.store.retention``). Raises ``sqlite3.Error`` if a batch cannot be written."""
        from service.store import retention

        return retention.purge(self, older_than_seconds, now, batch)

    def arrays_of(self, arrays: bytes | None, ref: str | None) -> bytes | None:
        """A batch record's column bytes: in its row, or in the blob file its ``arrays_ref`` names
        (None when that is gone or damaged: its columns read as missing)."""
        if ref is None or self.blobs is None:
            return arrays
        return self.blobs.read(ref)

    def erase(self, hashes: Iterable[str], model: str | None = None) -> dict[str, int]:
        """Delete the predictions whose subject hash is one of ``hashes`` (of ``model`` only, when
        given), their feedback, and their rows in the stored batches (``service.store.erasure``)."""
        from service.store import erasure

        return erasure.erase(self, list(hashes), model)


def _names(description: Any) -> list[str]:
    return [column[0] for column in description or ()]


def now() -> float:
    return time.time()


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Yield consecutive slices of at most ``size`` items (to stay under SQLite's parameter limit)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
