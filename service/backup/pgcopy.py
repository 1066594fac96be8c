"""Move a ``pg_dump`` copy's rows into a SQLite store, without a PostgreSQL server.

For a restore of a PostgreSQL backup onto SQLite, where ``pg_restore`` has no database to load.
``pg_restore --data-only --file=-`` turns the custom-format archive into its ``COPY ... FROM stdin``
blocks (text format: tab-separated, ``\\N`` for NULL, backslash escapes), read here as a stream.
The target's schema is the server's own (``tables.DDLS``); each value is typed by the column it
lands in: ``{any}`` columns from the JSON text PostgreSQL keeps back to the value itself, integers,
doubles (PostgreSQL writes them shortest-exact: they read back to the same float), ``BYTEA`` hex
to bytes, text as it is. PostgreSQL's explicit ``rowid`` goes into SQLite's implicit one, and
every key keeps its number, so the restored rows are the dumped rows. No Flask.
"""

from __future__ import annotations

import io
import json
import re
import subprocess  # nosec B404  # pg_restore, with fixed arguments
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from service.backup import pinned as pins
from service.backup import tables
from service.store import Store

COPY_RE = re.compile(r'COPY (?:"?\w+"?\.)?"?(\w+)"? \((.*)\) FROM stdin;')
#: COPY's text-format escapes (PostgreSQL docs, COPY, "Text Format").
ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def copy_dump_into(dump: Path, target: Store) -> dict[str, int]:
    """Insert every row of the ``pg_dump`` archive ``dump`` into the SQLite store ``target``; return the
    count per table. Raise ``ValueError`` when pg_restore cannot read the archive."""
    for ddl in tables.DDLS:
        target.create_tables(ddl)
    packed = tables.any_columns()
    command = [pins.pg_tool("pg_restore"), "--data-only", "--no-owner", "--no-privileges", "--file=-", str(dump)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603  # nosec B603  # fixed tool and arguments
    script = io.TextIOWrapper(proc.stdout, encoding="utf-8", newline="\n")  # \r inside a value stays escaped
    counts: dict[str, int] = {}
    try:
        for table, columns, rows in _blocks(script):
            counts[table] = _insert(target, table, columns, rows, packed)
    finally:
        script.close()
        error = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        lines = [line for line in error.splitlines() if line.strip()]
        raise ValueError(f"pg_restore failed: {lines[-1] if lines else f'exit code {code}'}")
    return counts


def _blocks(script: IO[str]) -> Iterator[tuple[str, list[str], Iterator[list[str | None]]]]:
    """Each ``COPY`` block of ``script``: its table, its columns, and its rows (consumed before the next)."""
    for line in script:
        found = COPY_RE.fullmatch(line.rstrip("\n"))
        if line.startswith("SET client_encoding") and "'UTF8'" not in line:  # the store's databases are UTF-8
            raise ValueError(f"the dump is not UTF-8 ({line.strip()}): restore it into PostgreSQL instead")
        if found is None:
            continue
        columns = [name.strip().strip('"') for name in found.group(2).split(",")]
        rows = _rows(script)
        yield found.group(1), columns, rows
        for _ in rows:  # whatever the consumer left, up to the block's end
            pass


def _rows(script: IO[str]) -> Iterator[list[str | None]]:
    for line in script:
        line = line.rstrip("\n")
        if line == "\\.":
            return
        yield [None if field == "\\N" else ESCAPE_RE.sub(_unescape, field) for field in line.split("\t")]
    raise ValueError("damaged backup: a COPY block of the store copy has no end")


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return SIMPLE.get(code, code)


def _insert(target: Store, table: str, columns: list[str], rows: Iterator[list[str | None]],
            packed: set[tuple[str, str]]) -> int:
    declared = {row[1]: str(row[2]).upper() for row in target.fetch(f"PRAGMA table_info({table})")}
    if not declared:
        return 0  # a table this server does not make (none, for a table name matched by COPY_RE's \w+)
    declared["rowid"] = "INTEGER"  # PostgreSQL's explicit rowid is SQLite's implicit one
    kept = [i for i, name in enumerate(columns) if name in declared]
    names = tuple(columns[i] for i in kept)
    readers = [_reader(declared[name], (table, name) in packed) for name in names]
    insert = target.insert_sql(table, names)
    count, batch = 0, []
    for fields in rows:
        batch.append(tuple(None if fields[i] is None else read(fields[i]) for i, read in zip(kept, readers, strict=True)))
        if len(batch) >= tables.BATCH:
            count += _write(target, insert, batch)
            batch = []
    return count + (_write(target, insert, batch) if batch else 0)


def _write(target: Store, insert: str, batch: list[tuple[Any, ...]]) -> int:
    with target.transaction() as db:
        db.executemany(insert, batch)
    return len(batch)


def _reader(declared: str, any_column: bool) -> Callable[[str], Any]:
    """How a COPY text value becomes the value SQLite keeps, by the target column's declared type."""
    if any_column:
        return json.loads  # what Store.pack wrote on PostgreSQL (NaN and infinities included)
    if "INT" in declared:
        return int
    if any(kind in declared for kind in ("REAL", "FLOA", "DOUB")):
        return float
    if "BLOB" in declared:
        return lambda text: bytes.fromhex(text[2:])  # BYTEA's hex output: \x0a1b...
    return str
