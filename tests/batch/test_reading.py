"""A CSV file is read in batches of a few megabytes, its float features parsed by the reader: chunks of
exactly ``chunk_rows`` rows, memory bounded by the block size whatever the file's size, and the same
rows, values and rejects as reading every field as text, even when a field refuses to parse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from service.batch import reading, rows
from service.serving.schemas import model_schema

ROWS = 60_000  # about 12 MB of CSV: three of the reader's blocks


def features(root: Path) -> list[dict]:
    return json.loads((root / "breast-cancer" / "1" / "manifest.json").read_text())["input"]["features"]


def write_csv(path: Path, bad_row: int | None = None, bad: str = "") -> list[str]:
    data = load_breast_cancer(as_frame=True).data
    frame = data.iloc[np.arange(ROWS) % len(data)].reset_index(drop=True).astype(object)
    if bad_row is not None:
        frame.iloc[bad_row, 2] = bad
    frame.to_csv(path, index=False)
    return list(data.columns)


def test_a_csv_file_is_read_in_bounded_batches_and_exact_chunks(artifact_root, tmp_path):
    names = write_csv(tmp_path / "in.csv")
    assert (tmp_path / "in.csv").stat().st_size > 2 * reading.CSV_BLOCK_BYTES
    source = reading.Input(tmp_path / "in.csv", "csv")
    chunks = list(source.chunks(9_000, names, floats=names))
    assert [c.n_rows for c in chunks] == [9_000] * 6 + [6_000] and [c.start for c in chunks] == list(range(0, ROWS, 9_000))
    batches = [batch for chunk in chunks for batch in chunk.table.to_batches()]
    assert len(batches) > len(chunks)  # chunks are cut from the reader's batches, not read whole
    assert max(batch.nbytes for batch in batches) <= reading.CSV_BLOCK_BYTES
    assert all(str(chunk.table.schema.field(name).type) == "double" for chunk in chunks for name in names)
    assert source.fraction_read() == 1.0


@pytest.mark.parametrize(("bad_row", "bad"), [(50_000, "abc"), (50_000, " 1.5"), (5, "n/a"), (None, "")])
def test_a_field_the_float_parser_refuses_turns_the_rest_to_text_with_the_same_rows_and_rejects(
        artifact_root, tmp_path, bad_row, bad):
    names = write_csv(tmp_path / "in.csv", bad_row, bad)
    schema = model_schema(features(artifact_root))
    source = reading.Input(tmp_path / "in.csv", "csv")
    parsed = list(source.chunks(16_384, names, floats=names))
    text = list(source.chunks(16_384, names))
    assert [(c.index, c.start, c.n_rows) for c in parsed] == [(c.index, c.start, c.n_rows) for c in text]
    for mine, theirs in zip(parsed, text, strict=True):
        a, b = rows.check_chunk(schema, mine, frozenset(names)), rows.check_chunk(schema, theirs, frozenset(names))
        assert a.good.tolist() == b.good.tolist()
        assert [(i, e.to_dict()) for i, e in a.rejects] == [(i, e.to_dict()) for i, e in b.rejects]
        for name in names:
            np.testing.assert_array_equal(a.columns[name], b.columns[name])
    rejected = [mine.start + i for mine in parsed for i, _ in rows.check_chunk(schema, mine, frozenset(names)).rejects]
    assert rejected == ([] if bad_row is None or bad == " 1.5" else [bad_row])
