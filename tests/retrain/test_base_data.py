"""The base training file: read in chunks, checked like a request, the target mapped onto the classes."""

from __future__ import annotations

import pandas as pd
import pytest

from service.retrain import base_data

FEATURES = [
    {"name": "x", "type": "float", "required": True, "nullable": False, "min": 0.0, "max": None, "categories": None},
    {"name": "kind", "type": "category", "required": True, "nullable": False, "min": None, "max": None,
     "categories": ["a", "b"]},
]


def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [1.0, 2.0, -1.0, 3.0, 4.0, 5.0], "kind": ["a", "b", "a", "c", "b", "a"],
                         "target": ["1", "0", "1", "1", "yes", "0"], "extra": range(6)})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rows_the_server_would_refuse_are_left_out_and_counted(tmp_path, suffix):
    path = tmp_path / f"base{suffix}"
    frame().to_csv(path, index=False) if suffix == ".csv" else frame().to_parquet(path, index=False)
    found = base_data.read(path, "target", FEATURES, "classification", [0, 1], max_rows=100, chunk_rows=2)
    assert found.X["x"].tolist() == [1.0, 2.0, 5.0]  # -1 is below min, "c" is no category, "yes" no class
    assert found.X["kind"].tolist() == ["a", "b", "a"]
    assert found.y.tolist() == [1, 0, 0] and found.y.dtype.kind == "i"
    assert found.read == 6 and found.left_out == {"invalid_row": 2, "missing_or_unknown_target": 1}
    assert not found.capped


def test_the_row_cap_stops_the_read(tmp_path):
    path = tmp_path / "base.csv"
    frame().to_csv(path, index=False)
    found = base_data.read(path, "target", FEATURES, "classification", [0, 1], max_rows=2, chunk_rows=2)
    assert len(found.X) == 2 and found.capped


@pytest.mark.parametrize(("target", "drop", "message"), [
    ("label", None, "has no column 'label'"),
    ("target", "kind", "lacks columns the model needs: kind"),
])
def test_a_file_without_what_is_needed_is_refused_in_one_line(tmp_path, target, drop, message):
    path = tmp_path / "base.csv"
    (frame().drop(columns=[drop]) if drop else frame()).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        base_data.read(path, target, FEATURES, "classification", [0, 1], max_rows=10)


def test_json_lines_are_not_training_data(tmp_path):
    path = tmp_path / "base.jsonl"
    path.write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match="CSV or Parquet"):
        base_data.read(path, "target", FEATURES, "classification", [0, 1], max_rows=10)
