"""Read an input file in chunks of a fixed number of rows: CSV, Parquet or JSON Lines.

Chunks have the same boundaries every time a file is read with the same ``chunk_rows``: that
is what lets a resumed run skip exactly the rows it scored before. Only the columns a run
needs are read. CSV is read as text, every field a string or, when empty, missing, so a code
like "01" never becomes the number 1 (``service.batch.rows`` converts text per feature).
Parquet keeps its types; its nulls are missing values. JSON Lines are decoded line by line
into records, as a request's instances are. Memory is one chunk and the reader's buffer,
whatever the size of the file. No Flask.
"""

from __future__ import annotations

import csv
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = ("csv", "parquet", "jsonl")
EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
CSV_BLOCK_BYTES = 4 << 20  # what pyarrow parses at a time: a few MB keeps memory flat
PARQUET_BATCH_ROWS = 65_536
#: What a JSON Lines row that is not an object is rejected with (the API's word for such an instance).
NOT_AN_OBJECT = "Must be an object."


def skip_pandas_probe() -> None:
    """Let pyarrow's first conversion find pandas absent, so it does not import it (0.3 s of a run's start).

    pyarrow asks once, lazily, whether pandas is importable, to recognise pandas objects among the
    values it converts; a file run hands it only Arrow and numpy values. Its calls that need pandas
    (``to_pandas``, ``from_pandas``) import it themselves when asked, and our code imports it where
    a model needs it, so only the probe is answered "absent". Nothing happens once pandas is loaded.
    """
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _NO_PANDAS)
    try:
        pa.array([0])  # the probe runs on pyarrow's first conversion
    finally:
        sys.meta_path.remove(_NO_PANDAS)


class _NoPandas:
    """An import finder that refuses pandas: what pyarrow's probe meets while it is in ``sys.meta_path``."""

    @staticmethod
    def find_spec(name: str, *_: Any) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not probed by a batch run", name=name)


_NO_PANDAS = _NoPandas()


def format_of(path: Path, given: str | None) -> str:
    """The format named, else the one the file's extension says; raise ``ValueError`` if neither."""
    if given:
        return given
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"cannot tell the format of {path.name} from its extension; name it with --input-format "
                         f"or --output-format ({', '.join(FORMATS)})")
    return found


@dataclass
class Chunk:
    """Consecutive rows of the input: a table (CSV as text, Parquet typed) or JSON Lines records."""

    index: int  # 0-based chunk number
    start: int  # the first row's index in the input
    n_rows: int
    table: pa.Table | None = None
    records: list[dict[str, Any] | None] | None = None  # None for a line that is not a JSON object
    text: bool = False  # the table's values are CSV text
    broken: dict[int, str] = field(default_factory=dict)  # JSON Lines rows that are not objects: why
    numbers: np.ndarray | None = None  # the rows' numbers when not start, start + 1, ... (a Spark row column)

    def positions(self, indices: np.ndarray) -> np.ndarray:
        """The numbers of the rows at these positions in the chunk: what ids and reject details name."""
        if self.numbers is not None:
            return self.numbers[indices]
        return self.start + np.asarray(indices, dtype=np.int64)


class Input:
    """One input file: its columns (when it has a header or schema), its size, and its chunks."""

    def __init__(self, path: Path, fmt: str):
        self.path = path
        self.format = fmt
        self.size = path.stat().st_size
        self.total_rows: int | None = None  # known up front for Parquet only
        self.columns: list[str] | None = None  # None for JSON Lines: each record has its own keys
        self._read_bytes = 0
        self._read_rows = 0
        if fmt == "parquet":
            meta = pq.ParquetFile(path)
            self.total_rows = meta.metadata.num_rows
            self.columns = list(meta.schema_arrow.names)
        elif fmt == "csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                self.columns = next(csv.reader(fh), [])
        duplicated = sorted({c for c in self.columns or () if self.columns.count(c) > 1})  # type: ignore[union-attr]
        if duplicated:
            raise ValueError(f"{path.name} has more than one column named {', '.join(map(repr, duplicated))}")

    def fraction_read(self) -> float | None:
        """How much of the file has been read, 0..1, for an estimate of the time left."""
        if self.total_rows:
            return self._read_rows / self.total_rows
        return self._read_bytes / self.size if self.size else None

    def chunks(self, chunk_rows: int, needed: list[str], *, skip: int = 0, floats: Sequence[str] = ()) -> Iterator[Chunk]:
        """Yield the file's chunks of ``chunk_rows`` rows (the last may be shorter), from chunk ``skip`` on.

        ``floats``: columns of float features, which a CSV file's reader parses as numbers itself, off
        the main thread and without a string per value (a third of the memory), with the parser
        ``rows`` casts text with. A field that parser refuses ("n/a", " 1.5") stops that: the file is
        read again as text from the chunk it was in, and ``rows`` converts such values one by one, as
        it always does for text. The chunks are the same either way, as the checks see them.
        """
        if self.format == "jsonl":
            yield from self._jsonl(chunk_rows, skip)
            return
        numbers = [name for name in floats if name in needed] if self.format == "csv" else []
        index = start = 0
        with open(self.path, "rb") as fh:
            while True:
                batches = self._parquet(fh, needed) if self.format == "parquet" else self._csv(fh, needed, numbers, start)
                try:
                    for table in _rechunk(batches, chunk_rows):
                        self._read_rows = start + table.num_rows
                        self._read_bytes = fh.tell()
                        if index >= skip:
                            yield Chunk(index, start, table.num_rows, table=table, text=self.format == "csv")
                        index, start = index + 1, start + table.num_rows
                    return
                except pa.ArrowInvalid:
                    if not numbers:
                        raise
                    numbers = []  # the file again, as text, from the chunk the refused field is in
                    fh.seek(0)

    def _parquet(self, fh: BinaryIO, needed: list[str]) -> Iterator[pa.RecordBatch]:
        present = [name for name in needed if name in (self.columns or ())]
        # pre_buffer (pyarrow's default) keeps what it read ahead: memory grew with the file, ~50 MB per 100,000 rows
        yield from pq.ParquetFile(fh, pre_buffer=False).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=present)

    def _csv(self, fh: BinaryIO, needed: list[str], numbers: list[str], past: int) -> Iterator[pa.RecordBatch]:
        """The CSV file's batches of about ``CSV_BLOCK_BYTES`` from row ``past`` on: text, ``numbers`` parsed."""
        present = [name for name in needed if name in (self.columns or ())]
        for batch in self._csv_reader(fh, present, numbers):
            if past >= batch.num_rows:
                past -= batch.num_rows
                continue
            yield batch.slice(past) if past else batch
            past = 0

    @staticmethod
    def _csv_reader(fh: BinaryIO, present: list[str], numbers: Sequence[str]) -> pa_csv.CSVStreamingReader:
        kinds = {name: pa.float64() if name in numbers else pa.string() for name in present}
        convert = pa_csv.ConvertOptions(column_types=kinds, include_columns=present, strings_can_be_null=True,
                                        null_values=[""])
        return pa_csv.open_csv(fh, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert)

    def _jsonl(self, chunk_rows: int, skip: int) -> Iterator[Chunk]:
        with open(self.path, "rb") as fh:
            index = start = 0
            lines: list[bytes] = []
            for line in fh:
                if not line.strip():
                    continue  # a blank line (a trailing newline) is no row
                lines.append(line)
                if len(lines) == chunk_rows:
                    self._read_bytes = fh.tell()
                    if index >= skip:
                        yield _records(index, start, lines)
                    index, start, lines = index + 1, start + len(lines), []
            self._read_bytes = self.size
            if lines and index >= skip:
                yield _records(index, start, lines)


def ahead(chunks: Iterator[Chunk], depth: int = 1) -> Iterator[Chunk]:
    """Yield ``chunks`` while a thread reads the next ``depth`` of them.

    Reading and decoding (pyarrow's, which releases the interpreter lock) then overlap with the
    validation, prediction and writing of the chunk before; memory grows by ``depth`` chunks. An
    error the reader meets is raised here, where the next chunk was wanted; a consumer that stops
    early (a rejects threshold, an error of its own) stops the thread at its next chunk.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
        except BaseException as exc:  # noqa: BLE001  # handed to the consumer, raised there
            put(exc)
            return
        put(end)

    thread = threading.Thread(target=read, name="batch-reader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _records(index: int, start: int, lines: list[bytes]) -> Chunk:
    records: list[dict[str, Any] | None] = []
    broken: dict[int, str] = {}
    for i, line in enumerate(lines):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            broken[i] = NOT_AN_OBJECT
            record = None
        records.append(record)
    return Chunk(index, start, len(lines), records=records, broken=broken)


def _rechunk(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Regroup record batches of any length into tables of exactly ``size`` rows (the last shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == size:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)
