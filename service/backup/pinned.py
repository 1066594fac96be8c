"""A store snapshot pinned at one moment, then copied while serving goes on.

``pin(url)`` opens a read transaction that fixes what the copy will hold: on SQLite (WAL) a
transaction on our own connection, which ``sqlite3.Connection.backup`` then reads from, so
writers keep writing; on PostgreSQL a repeatable-read transaction whose snapshot is exported to
``pg_dump --snapshot``. The chain head and row counts are read in the same transaction, so the
manifest describes exactly what was copied. Secrets are left out of the copy unless asked for
(SQLite: deleted with ``secure_delete``, so their bytes are overwritten; PostgreSQL:
``--exclude-table-data``). No Flask.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess  # nosec B404  # pg_dump and pg_restore, with fixed arguments
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.store import POSTGRES_SCHEMES, SQLITE_SCHEME
from service.store.blobs import BlobFiles

#: Tables whose rows are secrets: copied only with ``--include-secrets``.
SECRET_TABLES = ("store_secrets",)
#: Rows counted in the snapshot (and compared after a restore); a table missing in an old store counts 0.
COUNTED = ("requests", "shadow", "prediction_batches", "feedback", "alerts", "audit", "store_secrets", "maintenance",
           "batch_runs")
SQLITE_COPY = "store/predictions.db"
PG_COPY = "store/store.pgdump"
#: libpq's environment variable for each part of a URL: the password never reaches a command line.
PG_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",  # nosec B105  # names, not a value
          "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}
#: Niceness of pg_dump/pg_restore: serving on the same host comes first.
NICENESS = 10


def backend_of(url: str) -> str:
    if url.startswith(SQLITE_SCHEME):
        return "sqlite"
    if url.startswith(POSTGRES_SCHEMES):
        return "postgresql"
    raise ValueError("DATABASE_URL must start with sqlite:///, postgresql:// or postgres://")


def sqlite_path(url: str) -> Path:
    return Path(url[len(SQLITE_SCHEME):])


@dataclass
class Pinned:
    """An open read transaction on the store; ``close`` ends it."""

    backend: str
    conn: Any
    snapshot: str | None = None  # PostgreSQL's exported snapshot id
    url: str = ""
    head: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        try:
            if self.backend == "sqlite":
                self.conn.execute("ROLLBACK")
            else:
                self.conn.rollback()
        finally:
            self.conn.close()


def pin(url: str, timeout: float = 30.0) -> Pinned:
    """Open the snapshot the backup will hold; read its audit head and row counts in it."""
    backend = backend_of(url)
    if backend == "sqlite":
        path = sqlite_path(url)
        if not path.is_file():
            raise ValueError(f"no store at {path} (DATABASE_URL)")
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN")  # deferred: the first read below takes the snapshot
        read = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        pinned = Pinned(backend, conn, url=url)
        tables = {row[0] for row in read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=False, connect_timeout=max(2, round(timeout)))
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        read = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        pinned = Pinned(backend, conn, snapshot, url)
        tables = {row[0] for row in read("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    last = read("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") if "audit" in tables else []
    pinned.head = {"seq": int(last[0][0]), "hash": last[0][1]} if last else {"seq": 0, "hash": "0" * 64}
    pinned.counts = {t: int(read(f"SELECT count(*) FROM {t}")[0][0]) if t in tables else 0  # noqa: S608  # nosec B608  # our table names
                     for t in COUNTED}
    return pinned


def copy_store(pinned: Pinned, folder: Path, *, include_secrets: bool) -> str:
    """Copy the pinned snapshot into ``folder``; return the copy's path relative to it."""
    if pinned.backend == "sqlite":
        target = Path(folder) / SQLITE_COPY
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            pinned.conn.backup(copy)  # one step: reads the pinned transaction, never restarts under writers
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, whatever the source used
            inline_blobs(copy, BlobFiles(Path(f"{sqlite_path(pinned.url)}.blobs")))
            if not include_secrets:
                copy.execute("PRAGMA secure_delete=ON")
                for table in SECRET_TABLES:
                    if copy.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchall():
                        copy.execute(f"DELETE FROM {table}")  # noqa: S608  # nosec B608  # our table names
        finally:
            copy.close()
        return SQLITE_COPY
    target = Path(folder) / PG_COPY
    target.parent.mkdir(parents=True, exist_ok=True)
    args = ["--format=custom", f"--snapshot={pinned.snapshot}", f"--file={target}", "--no-owner", "--no-privileges"]
    if not include_secrets:
        args += [f"--exclude-table-data={table}" for table in SECRET_TABLES]
    run_pg("pg_dump", args, pinned.url)
    return PG_COPY


def inline_blobs(copy: sqlite3.Connection, blobs: BlobFiles) -> int:
    """Put the bytes large records keep in blob files (``service.store.blobs``) into their rows of
    the copy, so it is one self-contained file any backend restores; return how many.

    Read right after the snapshot: bytes that retention deleted or erasure zeroed since then (of
    records past the cut-off, or of an erased person) stay out, and those records' columns read
    as missing, as they would in the store."""
    found = copy.execute("SELECT 1 FROM pragma_table_info('prediction_batches') WHERE name = 'arrays_ref'").fetchall()
    if not found:
        return 0
    refs = copy.execute("SELECT batch, arrays_ref FROM prediction_batches WHERE arrays_ref IS NOT NULL").fetchall()
    for batch, ref in refs:
        copy.execute("UPDATE prediction_batches SET arrays = ?, arrays_ref = NULL WHERE batch = ?",
                     (blobs.read(ref), batch))
    return len(refs)


def restore_pg(dump: Path, url: str, *, clean: bool) -> None:
    """Load a ``pg_dump`` copy into the database ``url`` names (dropping our tables first with ``clean``)."""
    args = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
    if clean:
        args += ["--clean", "--if-exists"]
    run_pg("pg_restore", [*args, str(dump)], url, dbname=True)


def run_pg(tool: str, args: list[str], url: str, *, dbname: bool = False) -> None:
    """Run a PostgreSQL client tool with the URL's connection in its environment (no password in argv)."""
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(url)
    env = {**os.environ}
    for key, var in PG_ENV.items():
        if params.get(key) is not None:
            env[var] = str(params[key])
    command = [pg_tool(tool), *args]
    if dbname:
        command.insert(1, f"--dbname={params.get('dbname') or params.get('user') or 'postgres'}")
    if shutil.which("nice"):
        command = ["nice", "-n", str(NICENESS), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # nosec B603  # noqa: S603  fixed tools
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ValueError(f"{tool} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def pg_tool(name: str) -> str:
    """The newest installed PostgreSQL client ``name`` (pg_dump must not be older than the server)."""
    installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3])
                       if p.parts[-3].isdigit() else 0)
    if installed:
        return str(installed[-1])
    found = shutil.which(name)
    if found is None:
        raise ValueError(f"{name} is not installed (the postgresql client package provides it)")
    return found
