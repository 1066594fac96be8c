import math
import random
from dataclasses import dataclass

import numpy as np
import pytest

from service.errors import ValidationFailed
from service.protocols import v1
from service.serving import schemas, validation
from service.serving.inference import Target
from service.serving.validation import validate_rows

FEATURES = [
    {"name": "mean radius", "type": "float", "min": 0.0, "max": 100.0},
    {"name": "count", "type": "int", "min": 0, "nullable": True},
    {"name": "smoker", "type": "bool", "required": False},
    {"name": "grade", "type": "category", "categories": ["a", "b", 3]},
    {"name": "note", "type": "string", "required": False, "nullable": True},
]
NAMES = [f["name"] for f in FEATURES]
GOOD_ROWS = [[1.5, 2, True, "a", "x"], [0, 3.0, False, 3, None]]
SMALL, VECTORISED = 10**9, 1  # vectorized_min_rows forcing each path


@dataclass
class Parsed:
    """What the v1 codec and validation make of one body together."""

    columns: dict
    n_rows: int
    layout: str
    probabilities: bool


def parse(payload, features=FEATURES, *, path, max_rows=1000):
    request = v1.decode(payload, Target("m"), max_rows=max_rows)
    batch = validate_rows(request.layout, request.data, features, vectorized_min_rows=path)
    return Parsed(batch.columns, batch.n_rows, request.layout, request.probabilities)


def failure(payload, features=FEATURES, *, path, max_rows=1000):
    with pytest.raises(ValidationFailed) as exc:
        parse(payload, features, path=path, max_rows=max_rows)
    assert exc.value.status == 422
    return exc.value


def records(rows):
    return [dict(zip(NAMES, row, strict=True)) for row in rows]


def columns(rows):
    return {name: [row[i] for row in rows] for i, name in enumerate(NAMES)}


LAYOUTS = {
    "records": lambda rows: {"instances": records(rows)},
    "rows": lambda rows: {"instances": rows},
    "columns": lambda rows: {"inputs": columns(rows)},
}


@pytest.fixture(params=[SMALL, VECTORISED], ids=["marshmallow", "vectorised"])
def path(request):
    return request.param


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_builds_the_same_columns(layout, path):
    batch = parse(LAYOUTS[layout](GOOD_ROWS), path=path)
    assert (batch.n_rows, batch.layout, batch.probabilities) == (2, layout, False)
    assert list(batch.columns) == NAMES
    np.testing.assert_array_equal(batch.columns["mean radius"], [1.5, 0.0])
    assert batch.columns["mean radius"].dtype == np.float64
    np.testing.assert_array_equal(batch.columns["count"], [2, 3])
    assert batch.columns["count"].dtype == np.int64
    assert batch.columns["smoker"].dtype == bool
    assert batch.columns["grade"].dtype == object and batch.columns["grade"].tolist() == ["a", 3]
    assert batch.columns["note"].tolist() == ["x", None]


def test_nulls_and_missing_optionals_change_dtypes(path):
    payload = {"instances": [{"mean radius": 1, "count": None, "grade": "b"}, {"mean radius": 2, "count": 4, "grade": "a"}]}
    batch = parse(payload, path=path)
    assert batch.columns["count"].dtype == np.float64
    assert math.isnan(batch.columns["count"][0]) and batch.columns["count"][1] == 4.0
    assert batch.columns["smoker"].dtype == object and batch.columns["smoker"].tolist() == [None, None]
    assert batch.columns["note"].tolist() == [None, None]


def test_missing_optional_column_is_null(path):
    batch = parse({"inputs": {"mean radius": [1.0], "count": [1], "grade": ["a"]}}, path=path)
    assert batch.columns["smoker"].tolist() == [None] and batch.columns["note"].tolist() == [None]


def test_probabilities_parameter(path):
    assert parse({"instances": GOOD_ROWS, "parameters": {"probabilities": True}}, path=path).probabilities is True
    assert parse({"instances": GOOD_ROWS, "parameters": {}}, path=path).probabilities is False


@pytest.mark.parametrize(
    "cell, value, message",
    [
        (0, "1.5", schemas.NOT_A_NUMBER),
        (0, True, schemas.NOT_A_NUMBER),
        (0, -1, "Must be greater than or equal to 0.0 and less than or equal to 100.0."),
        (0, None, schemas.NULL),
        (0, math.inf, schemas.NOT_FINITE),
        (1, 4.7, schemas.NOT_AN_INTEGER),
        (1, False, schemas.NOT_AN_INTEGER),
        (1, 2**64 - 1, schemas.TOO_LARGE),
        (1, -3, "Must be greater than or equal to 0."),
        (2, 1, schemas.NOT_A_BOOLEAN),
        (2, "true", schemas.NOT_A_BOOLEAN),
        (2, None, schemas.NULL),
        (3, "c", "Must be one of: a, b, 3."),
        (3, True, schemas.NOT_A_CATEGORY),
        (4, 7, schemas.NOT_A_STRING),
    ],
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_values_are_reported_by_row_and_field(cell, value, message, layout, path):
    rows = [list(row) for row in GOOD_ROWS] + [list(GOOD_ROWS[0])]
    rows[2][cell] = value
    error = failure(LAYOUTS[layout](rows), path=path)
    assert error.details == {"errors": [{"row": 2, "field": NAMES[cell], "messages": [message]}], "error_count": 1}
    assert error.message == f"1 invalid value in 1 row; first: row 2, field '{NAMES[cell]}': {message}"


def test_records_missing_required_and_unknown_keys(path):
    payload = {"instances": records(GOOD_ROWS) + [{"count": 1, "zzz": 1, "aaa": 2}]}
    assert failure(payload, path=path).details["errors"] == [
        {"row": 2, "field": "mean radius", "messages": [schemas.REQUIRED]},
        {"row": 2, "field": "grade", "messages": [schemas.REQUIRED]},
        {"row": 2, "field": "aaa", "messages": [schemas.UNKNOWN]},
        {"row": 2, "field": "zzz", "messages": [schemas.UNKNOWN]},
    ]


def test_rows_of_the_wrong_length_are_reported_and_the_rest_still_checked(path):
    payload = {"instances": [GOOD_ROWS[0], [1.0, 2], [-1.0, 2, True, "a", "x"]]}
    assert failure(payload, path=path).details["errors"] == [
        {"row": 1, "field": "instances", "messages": [schemas.ROW_LENGTH.format(count=5)]},
        {"row": 2, "field": "mean radius", "messages": ["Must be greater than or equal to 0.0 and less than or equal to 100.0."]},
    ]


def test_column_problems_have_no_row(path):
    payload = {"inputs": {"mean radius": [1.0, -2.0], "count": [1, 2], "extra": [1, 2]}}
    assert failure(payload, path=path).details["errors"] == [
        {"row": None, "field": "grade", "messages": [schemas.REQUIRED]},
        {"row": None, "field": "extra", "messages": [schemas.UNKNOWN]},
        {"row": 1, "field": "mean radius", "messages": ["Must be greater than or equal to 0.0 and less than or equal to 100.0."]},
    ]
    malformed = {"inputs": {"mean radius": [1.0, 2.0], "count": 1, "grade": [], "note": ["x"]}}
    assert failure(malformed, path=path).details["errors"] == [
        {"row": None, "field": "count", "messages": [schemas.NOT_A_LIST]},
        {"row": None, "field": "grade", "messages": [schemas.EMPTY]},
        {"row": None, "field": "inputs", "messages": [schemas.COLUMN_LENGTH]},
    ]


def test_envelope_errors_are_shaped_like_value_errors(path):
    error = failure({"instances": GOOD_ROWS, "inputs": columns(GOOD_ROWS), "debug": 1}, path=path)
    assert error.details["errors"] == [{"row": None, "field": "debug", "messages": [schemas.UNKNOWN]}]
    error = failure({"instances": GOOD_ROWS, "inputs": columns(GOOD_ROWS)}, path=path)
    assert error.message == f"1 error in the request; first: {schemas.EXACTLY_ONE}"
    error = failure({"instances": GOOD_ROWS, "parameters": {"probabilities": "yes"}}, path=path)
    assert error.details["errors"][0]["field"] == "parameters.probabilities"
    assert failure("not an object", path=path).details["errors"][0] == {
        "row": None,
        "field": None,
        "messages": [schemas.INVALID_TYPE],
    }


def test_row_limit_names_the_limit(path):
    error = failure({"instances": GOOD_ROWS * 3}, path=path, max_rows=5)
    assert error.details["errors"] == [{"row": None, "field": "instances", "messages": ["Must have at most 5 rows."]}]
    assert parse({"instances": GOOD_ROWS * 2}, path=path, max_rows=4).n_rows == 4


def test_errors_are_sorted_capped_and_counted(path):
    rows = [["x", -1, 0, "z", 1] for _ in range(30)]
    error = failure({"instances": rows}, path=path)
    assert error.details["error_count"] == 150
    entries = error.details["errors"]
    assert len(entries) == validation.MAX_REPORTED_ERRORS
    assert [(e["row"], e["field"]) for e in entries[:6]] == [(0, n) for n in NAMES] + [(1, "mean radius")]
    assert error.message == f"150 invalid values in 30 rows; first: row 0, field 'mean radius': {schemas.NOT_A_NUMBER}"


@pytest.mark.parametrize("name", ["k" * 500, "<script>alert(1)</script>", "a\nb", "\u202etxt"])
def test_unusual_unknown_keys_are_described_not_echoed(path, name):
    payload = {"instances": [dict(records(GOOD_ROWS)[0], **{name: 1})]}
    error = failure(payload, path=path)
    assert error.details["errors"][0]["field"] == "(an unknown field with an unusual name)"
    assert name not in str(error.details) and name not in error.message


def test_plain_unknown_keys_are_named(path):
    payload = {"instances": [dict(records(GOOD_ROWS)[0], colour=1)]}
    assert failure(payload, path=path).details["errors"][0]["field"] == "colour"


def test_vectorised_happy_path_never_checks_value_by_value(monkeypatch):
    def forbidden(*args):
        raise AssertionError("per-value check on the happy path")

    monkeypatch.setattr(validation, "convert", forbidden)
    rng = np.random.default_rng(1)
    rows = [
        [float(r), int(c), bool(b), g, None if i % 3 else "n"]
        for i, (r, c, b, g) in enumerate(
            zip(rng.uniform(0, 100, 200), rng.integers(0, 9, 200), rng.random(200) > 0.5, "ab" * 100, strict=True)
        )
    ]
    rows[0][1] = None
    for layout in LAYOUTS:
        assert parse(LAYOUTS[layout](rows), path=VECTORISED).n_rows == 200
    dense = [[0.0, 1, True, 3, "x"], [1.0, 0, False, "b", "y"]] * 50
    assert parse({"instances": dense}, path=VECTORISED).columns["count"].dtype == np.int64


@pytest.mark.parametrize(
    "column, feature",
    [
        ([0.0, 1.0, True, 0.5], {"type": "float"}),  # a bool hidden among 0/1 floats
        ([0, 1, False, 2], {"type": "int"}),
        ([2**53 + 1, 1.0], {"type": "int"}),  # exact ints beyond float precision
        ([2**62, 2], {"type": "int", "max": 2**62 - 1}),
        ([1.0, None, 2**53], {"type": "int", "nullable": True}),
        ([None, math.nan], {"type": "float", "nullable": True}),
        ([None, -math.inf], {"type": "float", "nullable": True}),
        ([1, 10**400], {"type": "float"}),
        ([2**70, 1.5], {"type": "float"}),
        ([3.0, 4.0], {"type": "int", "min": 3.5}),
        (["a", None], {"type": "category", "categories": ["a"], "nullable": True}),
        ([True, None], {"type": "bool", "nullable": True}),
        ([[1], {"a": 1}], {"type": "float"}),
    ],
)
def test_edge_columns_agree_on_both_paths(column, feature):
    features = [{"name": "v", **feature}]
    assert_same({"inputs": {"v": column}}, features)
    assert_same({"instances": [[value] for value in column]}, features)


def outcome(payload, features, path):
    try:
        return parse(payload, features, path=path)
    except ValidationFailed as exc:
        return exc


def assert_same(payload, features):
    small, large = outcome(payload, features, SMALL), outcome(payload, features, VECTORISED)
    assert type(small) is type(large)
    if isinstance(small, ValidationFailed):
        assert (small.details, small.message) == (large.details, large.message)
        return
    assert isinstance(small, Parsed) and isinstance(large, Parsed)
    assert (small.n_rows, small.layout, small.probabilities) == (large.n_rows, large.layout, large.probabilities)
    assert list(small.columns) == list(large.columns)
    for name, column in small.columns.items():
        assert column.dtype == large.columns[name].dtype, name
        if column.dtype == object:
            assert column.tolist() == large.columns[name].tolist()
        else:
            np.testing.assert_array_equal(column, large.columns[name])


RANDOM_FEATURES = [
    {"name": "f", "type": "float", "min": -5.0, "max": 5.0},
    {"name": "fn", "type": "float", "nullable": True, "required": False},
    {"name": "i", "type": "int", "min": -3, "max": 10},
    {"name": "in", "type": "int", "nullable": True},
    {"name": "b", "type": "bool"},
    {"name": "bn", "type": "bool", "nullable": True, "required": False},
    {"name": "c", "type": "category", "categories": ["x", "y", 7]},
    {"name": "s", "type": "string", "nullable": True},
]
GOOD = {
    "float": lambda r: r.choice([r.uniform(-5, 5), r.randint(-5, 5), 0.0, 1.0, 5.0]),
    "int": lambda r: r.choice([r.randint(-3, 10), float(r.randint(-3, 10)), 0, 1]),
    "bool": lambda r: r.choice([True, False]),
    "category": lambda r: r.choice(["x", "y", 7]),
    "string": lambda r: r.choice(["x", "hello", ""]),
}
BAD = [True, False, 0, 1, 1.0, 4.5, -6.0, 11, 2**64 - 1, 1e300, "x", "1.5", "", [1], {"a": 1}, None, 7, "z"]


def random_payload(r: random.Random):
    n_rows = r.choice([1, 2, 3, 5, 8, 20])
    bad_rate = r.choice([0.0, 0.0, 0.02, 0.1, 0.4])
    rows = [[r.choice(BAD) if r.random() < bad_rate else GOOD[f["type"]](r) for f in RANDOM_FEATURES] for _ in range(n_rows)]
    names = [f["name"] for f in RANDOM_FEATURES]
    layout = r.choice(["records", "rows", "columns"])
    if layout == "rows":
        if r.random() < bad_rate:
            rows[r.randrange(n_rows)].append(1)
        if r.random() < bad_rate:
            rows[r.randrange(n_rows)].pop()
        return {"instances": rows}
    if layout == "records":
        recs = [dict(zip(names, row, strict=True)) for row in rows]
        for rec in recs:
            if r.random() < bad_rate:
                rec.pop(r.choice(names))
            if r.random() < bad_rate / 2:
                rec[r.choice(["extra", "zz", "f "])] = 1
        return {"instances": recs, "parameters": {"probabilities": r.random() < 0.5}}
    cols = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    if r.random() < bad_rate:
        cols.pop(r.choice(names))
    if r.random() < bad_rate / 2:
        cols["extra"] = [1] * n_rows
    if r.random() < bad_rate / 4:
        cols[r.choice(list(cols))].append(1.0)
    return {"inputs": cols}


def test_both_paths_agree_on_random_payloads():
    r = random.Random(20240611)
    failures = successes = 0
    for _ in range(1500):
        payload = random_payload(r)
        assert_same(payload, RANDOM_FEATURES)
        try:
            parse(payload, RANDOM_FEATURES, path=SMALL)
            successes += 1
        except ValidationFailed:
            failures += 1
    assert successes > 300 and failures > 300  # the generator exercises both outcomes


# -- exact floats are integers: 2.0 is 2 for int features and integer categories alike ------------

CODED = [{"name": "sex", "type": "category", "categories": [1, 2]}, {"name": "age", "type": "int", "min": 0}]


@pytest.mark.parametrize("path", [SMALL, VECTORISED])
@pytest.mark.parametrize("sex", [2.0, 1e0, 2])
def test_an_exact_float_is_the_integer_category_it_equals(path, sex):
    parsed = parse({"instances": [[sex, 59.0], [1, 1e1]]}, CODED, path=path)
    assert parsed.columns["sex"].tolist() == [2 if sex == 2 else 1, 1]
    assert all(type(v) is int for v in parsed.columns["sex"].tolist())
    assert parsed.columns["age"].dtype == np.int64 and parsed.columns["age"].tolist() == [59, 10]


@pytest.mark.parametrize("path", [SMALL, VECTORISED])
@pytest.mark.parametrize(("sex", "message"), [(2.5, schemas.NOT_A_CATEGORY), (True, schemas.NOT_A_CATEGORY),
                                               (3.0, "Must be one of: 1, 2."), (float("1e300"), "Must be one of: 1, 2.")])
def test_a_non_integral_float_or_a_boolean_is_refused_the_same_way_on_both_paths(path, sex, message):
    with pytest.raises(ValidationFailed) as exc:
        parse({"instances": [[1, 30], [sex, 30]]}, CODED, path=path)
    assert exc.value.details["errors"] == [{"row": 1, "field": "sex", "messages": [message]}]


def test_exact_floats_in_nullable_category_columns_agree_on_both_paths():
    features = [{"name": "code", "type": "category", "categories": [1, 2, 3], "nullable": True}]
    for column in ([1.0, None, 3.0], [1.0, 2, None], [2.0, "x"], [1.5, None]):
        assert_same({"inputs": {"code": column}}, features)
        assert_same({"instances": [[value] for value in column]}, features)


# -- the matrix layout (tensor protocols): numpy checks, the same answers as rows ------------------

MATRIX_FEATURES = [
    {"name": "f", "type": "float", "min": -5.0, "max": 5.0},
    {"name": "i", "type": "int", "min": -3, "max": 2**62},
    {"name": "c", "type": "category", "categories": [1, 2, 7, "x"]},
    {"name": "u", "type": "int"},
    {"name": "g", "type": "float"},
]
MATRIX_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint8, np.uint64, np.bool_]
ODD_VALUES = [0.0, 1.0, 2.0, 7.0, -4.0, 4.5, -6.0, 11.0, 2.0**62, 2.0**63, -(2.0**63), 1e300, math.nan, math.inf,
              -math.inf, 3.0]


def matrix_outcome(data, features, layout, path):
    try:
        return validate_rows(layout, data, features, vectorized_min_rows=path)
    except ValidationFailed as exc:
        return exc


def assert_matrix_same_as_rows(data, features=MATRIX_FEATURES):
    matrix = matrix_outcome(data, features, "matrix", VECTORISED)
    for path in (SMALL, VECTORISED):
        rows = matrix_outcome(data.tolist(), features, "rows", path)
        assert type(rows) is type(matrix), (data.dtype, path)
        if isinstance(rows, ValidationFailed):
            assert (rows.details, rows.message) == (matrix.details, matrix.message), (data.dtype, path)
            continue
        assert rows.n_rows == matrix.n_rows and list(rows.columns) == list(matrix.columns)
        for name, column in rows.columns.items():
            assert column.dtype == matrix.columns[name].dtype, (name, data.dtype)
            assert column.tolist() == matrix.columns[name].tolist(), (name, data.dtype)
            assert [type(v) for v in column.tolist()] == [type(v) for v in matrix.columns[name].tolist()]


@pytest.mark.parametrize("dtype", MATRIX_DTYPES, ids=lambda d: np.dtype(d).name)
def test_a_clean_matrix_builds_the_arrays_rows_build(dtype):
    data = np.array([[1.0, 2.0, 7.0, 0.0, 3.0], [0.0, 1.0, 1.0, 1.0, 1.0]]).astype(dtype)
    assert_matrix_same_as_rows(data)
    if dtype is np.bool_:  # booleans are not numbers here, as in JSON rows
        assert isinstance(matrix_outcome(data, MATRIX_FEATURES, "matrix", SMALL), ValidationFailed)
        return
    batch = validate_rows("matrix", data, MATRIX_FEATURES, vectorized_min_rows=SMALL)
    assert batch.n_rows == 2 and batch.columns["f"].dtype == np.float64
    assert batch.columns["i"].dtype == np.int64 and batch.columns["c"].tolist() == [7, 1]


@pytest.mark.parametrize("dtype", MATRIX_DTYPES, ids=lambda d: np.dtype(d).name)
def test_random_matrices_agree_with_rows(dtype):
    r = np.random.default_rng(11)
    for _ in range(60):
        n_rows = int(r.integers(1, 12))
        values = r.choice(ODD_VALUES, size=(n_rows, len(MATRIX_FEATURES)))
        clean = r.random((n_rows, len(MATRIX_FEATURES))) < 0.7
        values = np.where(clean, r.choice([0.0, 1.0, 2.0, 7.0], size=values.shape), values)
        with np.errstate(invalid="ignore", over="ignore"):
            data = values.astype(dtype)
        assert_matrix_same_as_rows(data)


def test_matrix_of_the_wrong_width_reports_every_row_like_rows():
    assert_matrix_same_as_rows(np.zeros((3, 4)))
    error = matrix_outcome(np.zeros((3, 4)), MATRIX_FEATURES, "matrix", VECTORISED)
    assert error.details["errors"][0] == {"row": 0, "field": "instances",
                                          "messages": [schemas.ROW_LENGTH.format(count=5)]}


def test_bool_and_string_features_refuse_numbers_in_a_matrix_as_in_rows():
    features = [{"name": "b", "type": "bool"}, {"name": "s", "type": "string"}]
    assert_matrix_same_as_rows(np.array([[1.0, 0.0]]), features)
    assert_matrix_same_as_rows(np.array([[True, False]]), features)
    error = matrix_outcome(np.array([[1.0, 0.0]]), features, "matrix", VECTORISED)
    assert [e["messages"] for e in error.details["errors"]] == [[schemas.NOT_A_BOOLEAN], [schemas.NOT_A_STRING]]


def test_a_string_matrix_is_checked_as_rows():
    features = [{"name": "c", "type": "category", "categories": ["a", "b"]}, {"name": "s", "type": "string"}]
    data = np.array([["a", "x"], ["b", "y"]], dtype=object)
    assert validate_rows("matrix", data, features, vectorized_min_rows=SMALL).columns["c"].tolist() == ["a", "b"]
    assert_matrix_same_as_rows(np.array([["c", "x"]], dtype=object), features)


def test_the_matrix_path_never_checks_value_by_value(monkeypatch):
    def forbidden(*args):
        raise AssertionError("per-value check on the matrix path")

    monkeypatch.setattr(validation, "convert", forbidden)
    monkeypatch.setattr(schemas, "convert", forbidden)
    data = np.tile([[1.0, 2.0, 7.0, 0.0, 3.0]], (10_000, 1))
    data[5, 0] = math.nan
    error = matrix_outcome(data, MATRIX_FEATURES, "matrix", VECTORISED)
    assert error.details["errors"] == [{"row": 5, "field": "f", "messages": [schemas.NOT_FINITE]}]
    assert validate_rows("matrix", data[6:], MATRIX_FEATURES, vectorized_min_rows=SMALL).n_rows == 9_994


def test_check_column_reports_what_a_request_of_those_records_is_refused_for():
    """A batch rejects rows one by one: the failures check_column gives are the request's 422 entries."""
    model = schemas.model_schema(FEATURES)
    spec = model.specs[NAMES.index("count")]
    values, absent = [1, "x", 2.5, None, 4], np.array([False, False, False, True, False])
    found, failures = validation.check_column(spec, values, absent)
    assert failures == [(1, "Not a valid integer."), (2, "Not a valid integer.")]
    assert found[0] == 1 and found[1] is None and found[3] is None
    rows = [{**dict(zip(NAMES, GOOD_ROWS[0], strict=True)), "count": v} for v in values]
    del rows[3]["count"]
    entries = failure({"instances": rows}, path=VECTORISED).details["errors"]
    assert [(e["row"], e["messages"][0]) for e in entries] == [(i, m) for i, m in failures]
    clean, none = validation.check_column(spec, [1, 2, 3], None)
    assert none == [] and clean.dtype == np.int64 and clean.tolist() == [1, 2, 3]


# -- rows of plain numbers for an all-numeric model: one matrix, same outcome as row by row ------

NUMERIC_FEATURES = [
    {"name": "f", "type": "float", "min": -5.0, "max": 5.0},
    {"name": "g", "type": "float"},
    {"name": "i", "type": "int", "min": -3, "max": 10},
    {"name": "j", "type": "int", "nullable": True},
]
NUMERIC_BAD = [True, False, 4.5, -6.0, 11, 2**53, 2**53 + 1, -(2**60) - 1, 2**64 - 1, 10**400, 1e300, -1e300,
               "1.5", "", None, [1], {"a": 1}]


def numeric_payload(r: random.Random):
    n_rows = r.choice([1, 1, 2, 3, 8, 20])
    bad_rate = r.choice([0.0, 0.0, 0.05, 0.2])
    good = [lambda: r.uniform(-5, 5), lambda: r.choice([r.gauss(0, 1e6), r.randint(-9, 9)]),
            lambda: r.choice([r.randint(-3, 10), float(r.randint(-3, 10))]),
            lambda: 2**53 + 1 if r.random() < 0.03 else r.randint(-10**6, 10**6)]  # exact only as an int
    rows = [[r.choice(NUMERIC_BAD) if r.random() < bad_rate else make() for make in good] for _ in range(n_rows)]
    if r.random() < 0.5:
        if r.random() < bad_rate:
            rows[0].append(1)
        return {"instances": rows}
    names = [f["name"] for f in NUMERIC_FEATURES]
    recs = [dict(zip(names, row, strict=True)) for row in rows]
    if r.random() < bad_rate:
        recs[0].pop("g")
    if r.random() < bad_rate:
        recs[-1]["extra"] = 1
    return {"instances": recs}


def without_matrix(monkeypatch, payload, path):
    with monkeypatch.context() as patched:
        patched.setattr(validation, "_numeric_matrix", lambda *args: None)
        return outcome(payload, NUMERIC_FEATURES, path)


def assert_outcomes_equal(a, b):
    assert type(a) is type(b)
    if isinstance(a, ValidationFailed):
        assert (a.details, a.message) == (b.details, b.message)
        return
    assert a.n_rows == b.n_rows and list(a.columns) == list(b.columns)
    for name, column in a.columns.items():
        assert column.dtype == b.columns[name].dtype, name
        np.testing.assert_array_equal(column, b.columns[name], err_msg=name)
        assert [type(v) for v in column.tolist()] == [type(v) for v in b.columns[name].tolist()], name


@pytest.mark.parametrize("share", [validation.SUSPECT_SHARE, 0], ids=["cells", "all-types"])
def test_numeric_rows_as_a_matrix_agree_with_row_by_row_checks(monkeypatch, share):
    monkeypatch.setattr(validation, "SUSPECT_SHARE", share)  # both ways of finding a boolean
    r = random.Random(7)
    taken = refused = 0
    for _ in range(800):
        payload = numeric_payload(r)
        request = v1.decode(payload, Target("m"), max_rows=1000)
        model = schemas.model_schema(NUMERIC_FEATURES)
        taken += validation._numeric_matrix(model, request.layout, request.data) is not None
        fast = outcome(payload, NUMERIC_FEATURES, SMALL)
        refused += isinstance(fast, ValidationFailed)
        for path in (SMALL, VECTORISED):
            assert_outcomes_equal(fast, without_matrix(monkeypatch, payload, path))
    assert taken > 300 and refused > 100  # both the matrix and the fallback, both outcomes


def test_clean_numeric_rows_never_check_value_by_value(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("per-value check of clean numeric rows")

    monkeypatch.setattr(validation, "convert", forbidden)
    monkeypatch.setattr(schemas.FeatureField, "_deserialize", forbidden)
    rows = [[1.5, -2.0, 3, 4], [0, 1e6, 4.0, None]]
    batch = parse({"instances": rows[:1]}, NUMERIC_FEATURES, path=SMALL)
    assert batch.columns["i"].dtype == np.int64 and batch.columns["i"].tolist() == [3]
    assert batch.columns["f"].tolist() == [1.5]
    names = [f["name"] for f in NUMERIC_FEATURES]
    assert parse({"instances": [dict(zip(names, rows[0], strict=True))]}, NUMERIC_FEATURES, path=SMALL).n_rows == 1
    with pytest.raises(AssertionError):  # a null is not a plain number: checked the usual way
        parse({"instances": rows}, NUMERIC_FEATURES, path=SMALL)


@pytest.mark.parametrize("rows", [1, 3, validation.SMALL_CELLS // 4 + 1])  # found by type, and by numpy masks
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_among_float_rows_is_refused_whatever_the_batch_size(rows, value):
    features = [{"name": f"f{j}", "type": "float"} for j in range(4)]
    instances = [[float(i % 2), 1.0, 0.0, 0.5] for i in range(rows)]
    instances[-1][2] = value
    for path in (SMALL, VECTORISED):
        with pytest.raises(ValidationFailed) as caught:
            parse({"instances": instances}, features, path=path)
        assert caught.value.details["errors"] == [{"row": rows - 1, "field": "f2", "messages": [schemas.NOT_A_NUMBER]}]
    instances[-1][2] = float(value)  # the same number as a float: one matrix, no error
    assert parse({"instances": instances}, features, path=SMALL).columns["f2"].tolist()[-1] == float(value)
