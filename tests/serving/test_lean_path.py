"""The request path's shortcuts give what the general path gives: same columns, inputs, answers, summaries."""

import numpy as np
import pytest

from service.models import demo
from service.monitoring.observe import SMALL_BATCH, _key, summarise
from service.serving import runtime
from service.serving.matrix import check_matrix
from service.serving.schemas import model_schema
from service.serving.validation import validate_rows


@pytest.fixture(scope="module")
def breast_cancer(demo_root):
    model = runtime.load(demo_root / "breast-cancer" / "1", name="breast-cancer", version=1, backend="onnx")
    assert model.onnx_bytes is not None
    return model


def test_a_clean_float_batch_gives_its_block_rows_as_the_columns(breast_cancer):
    rows = demo.breast_cancer()["X"].iloc[:25].to_numpy()
    batch = validate_rows("rows", rows.tolist(), breast_cancer.features, vectorized_min_rows=10**9)
    assert batch.block is not None and batch.block.shape == (rows.shape[1], 25)
    names = [f["name"] for f in breast_cancer.features]
    assert list(batch.columns) == names
    for j, name in enumerate(names):
        np.testing.assert_array_equal(batch.columns[name], rows[:, j])
        assert np.shares_memory(batch.columns[name], batch.block)  # views of the block, not copies


def test_a_value_out_of_its_range_still_takes_the_per_feature_path(breast_cancer):
    schema = model_schema(breast_cancer.features)
    bounded = next(spec for spec in schema.specs if spec.lo is not None or spec.hi is not None)
    rows = demo.breast_cancer()["X"].iloc[:3].to_numpy().copy()
    rows[1, bounded.index] = (bounded.lo - 1.0) if bounded.lo is not None else (bounded.hi + 1.0)
    errors, columns, block = check_matrix(schema, rows)
    assert [(row, field) for row, field, _ in errors] == [(1, bounded.name)] and block is None


def test_the_block_feeds_the_onnx_session_exactly_as_the_columns_do(breast_cancer):
    rows = demo.breast_cancer()["X"].iloc[::9].to_numpy()
    batch = validate_rows("rows", rows.tolist(), breast_cancer.features, vectorized_min_rows=10**9)
    _, inputs = breast_cancer.session()
    from_block, from_columns = inputs.feeds(batch.columns, batch.block), inputs.feeds(batch.columns)
    assert from_block.keys() == from_columns.keys()
    for name in from_block:
        assert from_block[name].flags.c_contiguous and from_block[name].dtype == from_columns[name].dtype
        np.testing.assert_array_equal(from_block[name], from_columns[name])
    with_block = breast_cancer.predict(batch.columns, True, batch.block)
    without = breast_cancer.predict(batch.columns, True)
    np.testing.assert_array_equal(with_block.predictions, without.predictions)
    np.testing.assert_array_equal(with_block.probabilities, without.probabilities)


def _summarised_with_unique(predictions):
    classes, counts = np.unique(np.asarray(predictions), return_counts=True)
    return {_key(c): int(n) for c, n in zip(classes, counts, strict=True)}


@pytest.mark.parametrize("predictions", [
    np.array([1]), np.array([0, 1, 1, 0, 2]), np.array(["b", "a", "b"]), np.array([True, False, True]),
    np.array([1.0, 2.0, 1.0]), np.array([10, 2, 3, 2]), np.array(["x", "y"], dtype=object),
    np.random.default_rng(0).integers(0, 12, size=SMALL_BATCH), np.random.default_rng(1).integers(0, 12, size=500),
])
def test_a_few_labels_are_summarised_as_np_unique_would(predictions):
    import orjson

    summary = orjson.loads(summarise(predictions, "classification"))
    assert summary == {"classes": _summarised_with_unique(predictions)}
    assert list(summary["classes"]) == list(_summarised_with_unique(predictions))  # in the same order too
