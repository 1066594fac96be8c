"""PostgreSQL for the shared store (psycopg 3): connections with bounded waits, advisory locks.

See ``service.store.sqlite`` for what a dialect is; this one also guards every statement with a
client-side deadline, because a server that is alive but not answering is otherwise waited on
forever. No Flask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from service.store.sqlite import values_clause

log = logging.getLogger(__name__)

MIN_CONNECT_TIMEOUT = 2  # libpq reads 1 as 2 seconds anyway
#: TCP keepalive probes before a silent peer is declared dead. With ``keepalives_idle`` and
#: ``keepalives_interval`` both ``ceil(timeout)`` seconds (at least 1), a connection to a host
#: that vanished (power loss, network partition: nothing answers, not even its kernel) fails
#: after idle + count * interval = 4 * ceil(timeout) s: 4 s for the server's 1 s store timeout.
KEEPALIVE_COUNT = 3
#: ``tcp_user_timeout``: data sent but unacknowledged this many store timeouts fails the connection
#: (4 * ceil(timeout) s as well), where keepalives do not apply (a statement being sent).
USER_TIMEOUT_TIMEOUTS = 4
#: Seconds a read (autocommit: no server-side statement timeout) may wait for the server's answer
#: before the client drops the connection. Generous: reads may legitimately scan a lot.
READ_SECONDS = 60.0


class PostgresDialect:
    """PostgreSQL through psycopg 3: writers side by side, explicit row ids, advisory locks."""

    DDL = {"rowid": "rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,", "any": "TEXT",  # ``any``: JSON text
           "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "bytes": "BYTEA"}

    def __init__(self, url: str, timeout: float):
        import psycopg  # only PostgreSQL users pay for the import

        self.psycopg = psycopg
        self.url = url
        self.path = None
        self.timeout = timeout  # seconds a write statement may run, lock waits included
        self.connect_timeout = max(MIN_CONNECT_TIMEOUT, math.ceil(timeout))
        # An open connection must not wait forever on a server that stopped answering. The kernel
        # notices a vanished host (keepalives, tcp_user_timeout: see KEEPALIVE_COUNT); a server
        # that is there but does not answer (a frozen process, whose kernel still acknowledges
        # every packet) only the client can notice: ``WATCHDOG`` drops a connection whose statement
        # outlives its deadline (the server's own statement timeout plus ``connect_timeout``).
        # Parameters the URL sets itself win.
        seconds = max(1, math.ceil(timeout))
        try:  # a malformed URL is a configuration error, not an outage: say so now
            given = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ValueError(f"invalid PostgreSQL URL: {exc}") from None
        self.connect_params = {k: v for k, v in {
            "keepalives": 1, "keepalives_idle": seconds, "keepalives_interval": seconds,
            "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": USER_TIMEOUT_TIMEOUTS * seconds * 1000,
        }.items() if k not in given}
        self._idle = psycopg.pq.TransactionStatus.IDLE
        # Most specific first: QueryCanceled (a statement timeout) is an OperationalError.
        self._errors = ((psycopg.IntegrityError, sqlite3.IntegrityError), (psycopg.OperationalError, sqlite3.OperationalError),
                        (psycopg.DataError, sqlite3.DataError), (psycopg.ProgrammingError, sqlite3.ProgrammingError),
                        (psycopg.InterfaceError, sqlite3.InterfaceError))

    def connect(self) -> PgConnection:
        conn = self.psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout,
                                    application_name="prediction-server", row_factory=_mapping_rows,
                                    **self.connect_params)
        return PgConnection(conn, self.psycopg.OperationalError)

    def usable(self, db: PgConnection) -> bool:
        """Tell whether a cached connection can take the next statement: open, and in no transaction.

        One left inside a transaction (failed or not) would fail or corrupt whatever comes next on
        its thread; the store closes a connection this rejects and opens another.
        """
        conn = db.conn
        return not (conn.closed or conn.broken) and conn.info.transaction_status == self._idle

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
            db.run(ddl)

    @contextmanager
    def begin(self, db: PgConnection, lock: str | None, timeout: float | None) -> Iterator[PgConnection]:
        seconds = self.timeout if timeout is None else timeout
        prelude = f"BEGIN; SET LOCAL statement_timeout = {round(seconds * 1000)}"  # one round trip; no parameters
        if lock is not None:
            prelude += f"; SELECT pg_advisory_xact_lock({lock_key(lock)})"
        # Each statement may run ``seconds`` on the server; past that plus a connect timeout's
        # grace, the server is not answering at all and the watchdog drops the connection.
        db.deadline = seconds + self.connect_timeout
        try:
            db.run(prelude)  # inside the try: a lock wait that times out must be rolled back too
            yield db
            db.run("COMMIT")
        except BaseException:
            self._rollback(db)
            raise
        finally:
            db.deadline = READ_SECONDS

    def _rollback(self, db: PgConnection) -> None:
        """End a failed transaction, or close the connection when even that fails (never reused)."""
        conn = db.conn
        if conn.closed or conn.broken or conn.info.transaction_status == self._idle:
            return
        try:
            db.run("ROLLBACK")
        except self.psycopg.Error:  # the original failure is what the caller must hear
            conn.close()

    def fetch(self, db: PgConnection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        from psycopg.rows import tuple_row

        with db.watched():
            return db.conn.cursor(row_factory=tuple_row).execute(_pg_sql(sql), params).fetchall()

    def insert_sql(self, table: str, columns: tuple[str, ...], conflict: str | None, key: tuple[str, ...],
                   select: str | None = None) -> str:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) {select or values_clause(columns)}"
        if conflict == "ignore":
            return sql + " ON CONFLICT DO NOTHING"
        if conflict == "replace":
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
            return sql + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"  # nosec B608  # the schema's own column names
        return sql

    def json_elements(self) -> str:
        return ("(SELECT value, ordinality - 1 AS key"
                " FROM json_array_elements_text(CAST(? AS json)) WITH ORDINALITY) AS j")

    def json_pairs(self) -> str:
        return ("(SELECT value ->> 0 AS a, value ->> 1 AS b, ordinality - 1 AS key"
                " FROM json_array_elements(CAST(? AS json)) WITH ORDINALITY) AS j")

    def bucket(self, column: str, seconds: float) -> str:
        # CAST alone rounds a double to the nearest integer; the bucket is the floor.
        return f"CAST(FLOOR({column} / {float(seconds)!r}) AS BIGINT)"

    def uncompressed(self, db: PgConnection, table: str, columns: tuple[str, ...]) -> None:
        # TOAST compresses long values with pglz by default: ~25 ms per MB written, more than the
        # space is worth for these columns. EXTERNAL keeps them out of line, uncompressed. Set once.
        with self.begin(db, "schema", None):
            names = [row[0] for row in db.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(? AS regclass) AND attstorage <> 'e'"
                " AND attname = ANY(?)", (table, list(columns))).fetchall()]
            if names:
                db.run(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {n} SET STORAGE EXTERNAL" for n in names))

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
                                    application_name="prediction-server-lock", **self.connect_params)
        try:
            # Not the key of ``begin``'s lock of the same name: holding this must not block those.
            key = lock_key(f"session:{name}")
            with WATCHDOG.watch(conn, self.timeout + self.connect_timeout):
                held = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if not held:
            conn.close()
            return None
        return AdvisoryLock(conn, key, self.psycopg.Error, self.timeout + self.connect_timeout)


class PgConnection:
    """A psycopg connection that takes the store's sqlite3-style SQL (``?`` placeholders).

    Every statement is watched: one the server has not answered within ``deadline`` seconds
    (``READ_SECONDS``, or a transaction's own bound set by ``PostgresDialect.begin``) fails with
    ``OperationalError`` and leaves the connection closed.
    """

    def __init__(self, conn: Any, operational_error: type[Exception]):
        self.conn = conn
        self.deadline = READ_SECONDS
        self._operational_error = operational_error

    @contextmanager
    def watched(self) -> Iterator[None]:
        with WATCHDOG.watch(self.conn, self.deadline) as watch:
            try:
                yield
            except self._operational_error as exc:
                if watch.fired:  # say why, rather than libpq's "server closed the connection"
                    raise self._operational_error(
                        f"no answer from the database server within {watch.seconds:g} s: connection dropped") from exc
                raise

    def run(self, sql: str) -> Any:
        """Run SQL with no parameters (psycopg's own placeholders, none here) under the watchdog."""
        with self.watched():
            return self.conn.execute(sql)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        with self.watched():
            return self.conn.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        cursor = self.conn.cursor()
        with self.watched():
            cursor.executemany(_pg_sql(sql), [tuple(row) for row in rows])
        return cursor

    def close(self) -> None:
        self.conn.close()


class AdvisoryLock:
    """A PostgreSQL session lock, held by its own connection for as long as that connection lives."""

    def __init__(self, conn: Any, key: int, error: type[Exception], deadline: float = READ_SECONDS):
        self.conn = conn
        self.key = key
        self._error = error
        self._deadline = deadline  # seconds a check may wait for the server (see WATCHDOG)

    @property
    def closed(self) -> bool:
        """Tell whether the lock is gone (closed, or its session ended): asks the server."""
        if self.conn.closed:
            return True
        try:
            with WATCHDOG.watch(self.conn, self._deadline):
                self.conn.execute("SELECT 1")
        except self._error:
            self.conn.close()
            return True
        return False

    def close(self) -> None:
        """Release the lock now (a closed session releases it too, but only once its backend exits)."""
        if not self.conn.closed:
            try:
                with WATCHDOG.watch(self.conn, self._deadline):
                    self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except self._error:
                pass  # the session is gone, and the lock with it
        self.conn.close()


class Watch:
    """One statement being watched: its connection, deadline, and whether the watchdog fired."""

    __slots__ = ("conn", "seconds", "deadline", "fired")

    def __init__(self, conn: Any, seconds: float):
        self.conn = conn
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False


class Watchdog:
    """Drop the connection of any PostgreSQL statement not answered by its deadline.

    libpq has no client-side statement timeout, and TCP sees nothing wrong with a server process
    that is alive but not answering (stopped, swapped out, stuck): its kernel acknowledges every
    packet, so keepalives and ``tcp_user_timeout`` never fire and the caller would wait forever.
    One daemon thread per process checks the watched statements every ``POLL`` seconds and shuts
    down the socket of an overdue one: libpq then sees the connection closed, the statement fails
    with ``OperationalError``, the connection is broken and replaced on its next use. Started on
    first use; a forked child starts its own.
    """

    POLL = 0.25

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, Watch] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, conn: Any, seconds: float) -> Iterator[Watch]:
        watch = Watch(conn, seconds)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()
            self._watched[id(watch)] = watch
        try:
            yield watch
        finally:
            with self._lock:
                self._watched.pop(id(watch), None)
            if watch.fired and not conn.closed:  # fired just as the answer came: still unusable
                conn.close()

    def _run(self) -> None:
        while True:
            time.sleep(self.POLL)
            now = time.monotonic()
            with self._lock:  # held while dropping: the statement cannot end (and free its socket) meanwhile
                for key, watch in list(self._watched.items()):
                    if watch.deadline <= now:
                        del self._watched[key]
                        watch.fired = True
                        _drop(watch.conn, watch.seconds)


def _drop(conn: Any, seconds: float) -> None:
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:  # shutdown acts on the socket, not the descriptor
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # already closed: nothing waits on it
        return
    log.warning("database server did not answer; connection dropped", extra={"seconds": seconds})


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._reset)


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


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    # psycopg's placeholders are %s, so a literal % (as in LIKE 'a-%') is written %%.
    return sql.replace("%", "%%").replace("?", "%s")


def lock_key(name: str) -> int:
    """Return the signed 64-bit advisory lock key for ``name`` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
