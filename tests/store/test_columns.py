"""Batch record columns: numbers as bytes round-trip exactly; everything else stays the JSON it was."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.store import columns


def round_trip(*values):
    """Write columns as a record does (one blob, JSON for the rest) and read each back."""
    writer = columns.ArrayWriter()
    text = columns.dumps([writer.column(v) for v in values])
    blob = writer.blob()
    return columns.read_inputs(text, blob), text, blob


@pytest.mark.parametrize(("values", "stored_dtype"), [
    (np.array([1.5, np.nan, -0.0, 1e300]), "<f8"),  # floats, NaN for missing
    (np.array([0.1, 0.2], dtype=np.float32), "<f8"),  # widened: readers see float64 only
    (np.array([3, -7, 2**62]), "<i8"),
    (np.array([3, 7], dtype=np.int32), "<i8"),
    (np.array([2**64 - 1, 0], dtype=np.uint64), "<u8"),
    (np.array([True, False, True]), "|b1"),
    (np.array([1.0, np.nan, 4.0]), "<f8"),  # an int feature with a missing value, as validation builds it
    (np.arange(12.0).reshape(4, 3)[:, 1], "<f8"),  # a strided view of a matrix
    (np.array([[0.25, 0.75], [1.0, 0.0], [np.nan, np.nan]]), "<f8"),  # probabilities: rows x classes
])
def test_numbers_are_stored_as_their_bytes_and_read_back_exactly(values, stored_dtype):
    (back,), text, blob = round_trip(values)
    (descriptor,) = orjson.loads(text)
    assert descriptor == {"dtype": stored_dtype, "shape": list(values.shape), "at": 0}
    assert len(blob) == -(-values.size * np.dtype(stored_dtype).itemsize // 8) * 8  # its bytes, padded to 8
    assert back.dtype == np.dtype(stored_dtype) and back.shape == values.shape
    assert np.array_equal(back, values.astype(stored_dtype), equal_nan=back.dtype.kind == "f")


@pytest.mark.parametrize("values", [
    np.array(["a", None, "b"], dtype=object),  # a category (or hashed pii) with a missing value
    np.array(["x", "yy"]),  # numpy strings
    np.array([1, None, 3], dtype=object),  # ints with a missing value left as objects
    np.array([True, None], dtype=object),  # bools with a missing value, as validation builds them
])
def test_other_columns_stay_json_lists(values):
    (back,), text, blob = round_trip(values)
    assert orjson.loads(text) == [values.tolist()] and blob is None
    assert back == values.tolist()


def test_columns_of_one_record_share_a_blob_each_at_an_aligned_offset():
    flags, ints, names, floats = np.array([True, False, True]), np.arange(3), np.array(["a", "b", "c"]), np.ones(3) / 3
    back, text, blob = round_trip(flags, ints, names, floats)
    assert [entry["at"] for entry in orjson.loads(text) if isinstance(entry, dict)] == [0, 8, 32]
    assert len(blob) == 56
    assert back[0].tolist() == [True, False, True] and back[1].tolist() == [0, 1, 2]
    assert back[2] == ["a", "b", "c"] and back[3].tolist() == (np.ones(3) / 3).tolist()


def test_missing_reads_as_json_did():
    """NaN and infinity were null in JSON: missing, a None among Python values."""
    (back,), _, _ = round_trip(np.array([1.0, np.nan, np.inf, -np.inf]))
    assert np.isnan(back[1:]).all() and back[0] == 1.0
    assert columns.python_values(back) == [1.0, None, None, None]
    assert columns.python_values(np.array([[0.5, np.nan]])) == [[0.5, None]]
    assert columns.python_values(np.array([1, 2])) == [1, 2] and type(columns.python_values(np.array([1]))[0]) is int


def test_a_descriptor_that_does_not_fit_its_blob_reads_as_missing():
    blob = np.ones(2).tobytes()
    assert columns.read({"dtype": "<f8", "shape": [3], "at": 0}, blob) is None
    assert columns.read({"dtype": "<f8", "shape": [2], "at": 0}, None) is None
    assert columns.read({"dtype": "|O", "shape": [2], "at": 0}, blob) is None
    assert columns.read({"shape": [2]}, blob) is None
    assert columns.read({"dtype": "<f8", "shape": [2], "at": 0}, blob).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(("values", "expected"), [
    ([1.5, None, 2.0], np.array([1.5, np.nan, 2.0])),
    ([1, 2, 3], np.array([1, 2, 3])),
    ([True, False], np.array([True, False])),
    ([[0.5, 0.5], [0.25, 0.75]], np.array([[0.5, 0.5], [0.25, 0.75]])),
])
def test_json_columns_that_came_from_arrays_become_those_arrays_again(values, expected):
    back = columns.from_json(values)
    assert isinstance(back, np.ndarray) and back.dtype == expected.dtype
    assert np.array_equal(back, expected, equal_nan=back.dtype.kind == "f")
    assert columns.python_values(back) == values


@pytest.mark.parametrize("values", [[], ["a", None], [1, None], [1, 2.5], [None, None], [True, 1], [2**70],
                                    [[0.5, 0.5], None], [[0.5], [0.5, 0.5]]])
def test_json_columns_that_may_not_have_come_from_arrays_stay_lists(values):
    assert columns.from_json(values) == values


@pytest.mark.parametrize("group", [
    [np.array([1.5, np.nan, -0.0]), np.array([2.0, 3.0, 4.0]), np.arange(9.0).reshape(3, 3)[:, 2]],  # one copy
    [np.array([1.5]), np.array([7], dtype=np.int64)],  # mixed kinds: column by column
    [np.array([1.0, 2.0]), np.array([1.0])],  # lengths differ: column by column
    [np.array([0.5, 1.5], dtype=">f8"), np.array([1.0, 2.0])],  # big-endian: converted column by column
])
def test_several_columns_at_once_make_the_same_record_as_one_by_one(group):
    one_by_one, at_once = columns.ArrayWriter(), columns.ArrayWriter()
    at_once.column(np.array([True]))  # after a padded column: offsets follow on
    one_by_one.column(np.array([True]))
    assert at_once.columns(group) == [one_by_one.column(c) for c in group]
    assert at_once.blob() == one_by_one.blob()
