"""A chunk of clean float rows takes one pass: the columns the API builds for the same rows, as rows of a
block ONNX Runtime takes as is; a chunk with a bad value goes through the checks column by column. And the
prediction ids built as bytes are the ones a join of strings gives."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import load_breast_cancer

from service.batch import rows, scoring
from service.batch.reading import Chunk
from service.errors import ValidationFailed
from service.serving.schemas import model_schema
from service.serving.validation import validate_rows


def api_columns(features: list[dict], records: list[dict]) -> dict[str, np.ndarray]:
    return validate_rows("records", records, features, vectorized_min_rows=1).columns


@pytest.mark.parametrize("text", [False, True])
def test_clean_float_rows_give_the_api_columns_as_rows_of_one_block(artifact_root, text):
    features = _features(artifact_root)
    X = load_breast_cancer(as_frame=True).data.iloc[:300]
    table = pa.Table.from_pandas(X.astype(str) if text else X, preserve_index=False)
    checked = rows.check_chunk(model_schema(features), Chunk(0, 0, len(X), table=table, text=text), frozenset(X))
    assert checked.rejects == [] and checked.good.tolist() == list(range(len(X)))
    assert checked.block is not None and checked.block.T.flags.c_contiguous and checked.block.shape == (30, 300)
    expected = api_columns(features, X.to_dict("records"))
    assert list(checked.columns) == list(expected)
    for name, values in expected.items():
        assert checked.columns[name].dtype == values.dtype
        np.testing.assert_array_equal(checked.columns[name], values)


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf])
def test_a_missing_or_refused_value_is_rejected_with_the_api_error(artifact_root, bad):
    features = _features(artifact_root)
    X = load_breast_cancer(as_frame=True).data.iloc[:50].copy()
    X.iloc[7, 3] = bad
    table = pa.Table.from_pandas(X, preserve_index=False)
    checked = rows.check_chunk(model_schema(features), Chunk(0, 100, len(X), table=table), frozenset(X))
    assert checked.block is None and [i for i, _ in checked.rejects] == [7] and 7 not in checked.good
    record = X.iloc[7].to_dict()
    if np.isnan(bad):
        record.pop(X.columns[3])  # a missing value is an absent field
    with pytest.raises(ValidationFailed) as api:
        validate_rows("records", [record], features, vectorized_min_rows=1)
    [(_, error)] = checked.rejects
    assert [(e["field"], e["messages"]) for e in error.details["errors"]] == \
        [(e["field"], e["messages"]) for e in api.value.details["errors"]]
    assert error.details["errors"][0]["row"] == 107


def _features(root) -> list[dict]:
    return json.loads((root / "breast-cancer" / "1" / "manifest.json").read_text())["input"]["features"]


@pytest.mark.parametrize("positions", [
    np.arange(0), np.arange(5), np.arange(95, 1005), np.arange(950_000, 1_000_000),  # a file's chunks
    np.sort(np.random.default_rng(1).choice(10**7, 3000, replace=False)),  # good rows of a chunk with rejects
    np.random.default_rng(2).permutation(2000), np.array([0, 10**12]),  # a Spark row column, in any order
])
def test_prediction_ids_are_the_run_id_and_each_rows_position(positions):
    ids = scoring.prediction_ids("18ef2625f1c17b9d", positions)
    assert ids.type == pa.string() and ids.to_pylist() == [f"18ef2625f1c17b9d-{p}" for p in positions.tolist()]
