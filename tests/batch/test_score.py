"""``python -m service score`` on real files: the API's validation row by row, versions by label,
refusals before unpickling, the rejects threshold, and what a run leaves in the store."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer

from service.batch import runs
from service.batch.run import Options, Services, score
from service.batch.target import parse
from service.models import artifacts
from service.store import Store
from tests.batch.conftest import rejects, summary
from tests.builders import copy_version

FEATURES = ["code", "x", "flag", "n"]


def api_errors(batch, model: str, instances: list) -> list[dict]:
    status, body = batch.api(model, instances)
    assert status == 422, body
    return body["error"]["details"]["errors"]


def reject_errors(lines: list[dict]) -> list[dict]:
    return [entry for line in lines for entry in line["error"]["details"]["errors"]]


def test_csv_codes_stay_text_and_rejects_carry_the_api_422_details(batch, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,code,x,flag,n\n"
                      "a,01,0.5,true,1\n"
                      "b,02,,False,2\n"  # x missing: the feature is nullable
                      "c,1,0.3,true,3\n"  # "1" is not the declared code "01"
                      "d,10,abc,true,4\n"
                      "e,01,1.5,yes,x\n"
                      "f,10,-0.2,0,\n")  # n missing: required
    out = tmp_path / "out.csv"
    result = batch.score("codes", source, out, "--keep", "id", "--probabilities")
    assert result.exit_code == 0, result.output
    assert summary(result) | {"rows": 6, "scored": 2, "rejects": 4, "version": 1} == summary(result)
    as_json = [{"code": "01", "x": 0.5, "flag": True, "n": 1}, {"code": "02", "flag": False, "n": 2},
               {"code": "1", "x": 0.3, "flag": True, "n": 3}, {"code": "10", "x": "abc", "flag": True, "n": 4},
               {"code": "01", "x": 1.5, "flag": "yes", "n": "x"}, {"code": "10", "x": -0.2, "flag": False}]
    lines = rejects(tmp_path / "out.csv.rejects.jsonl")
    assert [line["row"] for line in lines] == [2, 3, 4, 5]
    assert [line["keep"] for line in lines] == [{"id": "c"}, {"id": "d"}, {"id": "e"}, {"id": "f"}]
    assert reject_errors(lines) == api_errors(batch, "codes", as_json)
    assert "Must be one of: 01, 02, 10." in lines[0]["error"]["details"]["errors"][0]["messages"]
    # each reject is the API's whole answer for that row alone, row numbers aside
    status, alone = batch.api("codes", [as_json[5]])
    assert status == 422 and alone["error"]["details"]["errors"][0]["messages"] == \
        lines[3]["error"]["details"]["errors"][0]["messages"]
    scored = pd.read_csv(out, dtype={"id": str})
    status, answer = batch.api("codes", as_json[:2], probabilities=True)
    assert status == 200
    assert scored["id"].tolist() == ["a", "b"] and scored["prediction"].tolist() == answer["predictions"]
    assert scored[["probability_0", "probability_1"]].to_numpy() == pytest.approx(np.array(answer["probabilities"]),
                                                                                 rel=1e-12)
    run_id = summary(result)["run_id"]
    assert scored["prediction_id"].tolist() == [f"{run_id}-0", f"{run_id}-1"]
    assert set(scored["model"]) == {"codes"} and set(scored["version"]) == {1}


def test_parquet_nulls_and_nan_are_missing_values(batch, tmp_path):
    table = pa.table({"id": [10, 11, 12, 13, 14, 15],
                      "code": ["01", "02", "10", "01", "02", None],
                      "x": pa.array([0.5, None, float("nan"), 1.0, 2.0, 0.1], pa.float64()),
                      "flag": [True, False, True, None, True, False],
                      "n": pa.array([1, 2, 3, 4, None, 0], pa.int64())})
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    out = tmp_path / "out.jsonl"
    result = batch.score("codes", source, out, "--keep", "id")
    assert result.exit_code == 0, result.output
    assert (summary(result)["scored"], summary(result)["rejects"]) == (3, 3)
    as_json = [{"code": "01", "x": 0.5, "flag": True, "n": 1}, {"code": "02", "flag": False, "n": 2},
               {"code": "10", "flag": True, "n": 3}, {"code": "01", "x": 1.0, "n": 4},
               {"code": "02", "x": 2.0, "flag": True}, {"x": 0.1, "flag": False, "n": 0}]
    lines = rejects(tmp_path / "out.jsonl.rejects.jsonl")
    assert reject_errors(lines) == api_errors(batch, "codes", as_json)
    assert {m for line in lines for e in line["error"]["details"]["errors"] for m in e["messages"]} == \
        {"Missing data for required field."}
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    status, answer = batch.api("codes", as_json[:3])
    assert [row["id"] for row in scored] == [10, 11, 12]
    assert [row["prediction"] for row in scored] == answer["predictions"]


def test_json_lines_are_checked_like_instances(batch, tmp_path):
    rows = [{"id": 1, "code": "01", "x": 0.1, "flag": True, "n": 1},
            {"id": 2, "code": "02", "x": None, "flag": False, "n": 2},
            {"id": 3, "code": "10", "x": 0.2, "flag": True, "n": None},
            {"id": 4, "code": "01", "x": 0.3, "flag": True, "n": 1, "extra": 5}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n"
                      + json.dumps({"id": 6, "code": 1, "x": 0.0, "flag": False, "n": 0}) + "\n\n")
    out = tmp_path / "out.parquet"
    result = batch.score("codes", source, out, "--keep", "id")
    assert result.exit_code == 0, result.output
    lines = rejects(tmp_path / "out.parquet.rejects.jsonl")
    assert [line["row"] for line in lines] == [2, 3, 4, 5]
    api = api_errors(batch, "codes", [{k: v for k, v in row.items() if k != "id"} for row in rows])
    assert reject_errors(lines[:2]) == api
    assert lines[2]["error"]["details"]["errors"] == [{"row": 4, "field": None, "messages": ["Must be an object."]}]
    assert lines[3]["error"]["details"]["errors"][0]["messages"] == ["Must be one of: 01, 02, 10."]
    scored = pq.read_table(out).to_pylist()
    assert [row["id"] for row in scored] == [1, 2]
    assert [row["prediction"] for row in scored] == batch.api("codes", [
        {k: v for k, v in row.items() if k != "id"} for row in rows[:2]])[1]["predictions"]


def demo_csv(path, rows: int = 60, negative: int = 0) -> None:
    data = load_breast_cancer(as_frame=True).data.head(rows).copy()
    data.iloc[:negative, 0] = -1.0  # below the declared minimum of 0
    data.insert(0, "id", [f"r{i}" for i in range(rows)])
    data.to_csv(path, index=False)


def test_a_moved_label_gives_the_next_run_its_version_and_a_resume_across_it_is_refused(batch, tmp_path):
    source = tmp_path / "in.csv"
    demo_csv(source)
    first = batch.score("breast-cancer", source, tmp_path / "first.parquet", "--keep", "id")
    assert first.exit_code == 0 and summary(first)["version"] == 1
    copy_version(batch.root, "breast-cancer", 1, 2)
    moved = batch.runner.invoke(__import__("service.cli", fromlist=["cli"]).cli,
                                ["label", "set", "breast-cancer", "production", "2"])
    assert moved.exit_code == 0, moved.output
    second = batch.score("breast-cancer", source, tmp_path / "second.parquet", "--keep", "id")
    assert second.exit_code == 0 and summary(second)["version"] == 2
    assert set(pq.read_table(tmp_path / "second.parquet").column("version").to_pylist()) == {2}

    # a run with version 2 interrupted after its first chunk, then production moves back to 1
    out = tmp_path / "third.parquet"
    options = Options(parse("breast-cancer"), source, out, tmp_path / "third.rejects.jsonl", "csv", "parquet",
                      keep=("id",), chunk_rows=10)
    services = Services(batch.root, Store.from_url(batch.database_url), actor="cli:test")

    def interrupt(progress):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        score(options, services, progress=interrupt)
    assert json.loads((tmp_path / "third.parquet.score-state.json").read_text())["chunks_done"] == 1
    back = batch.runner.invoke(__import__("service.cli", fromlist=["cli"]).cli,
                               ["label", "set", "breast-cancer", "production", "1"])
    assert back.exit_code == 0, back.output
    refused = batch.score("breast-cancer", source, out, "--keep", "id", "--chunk-rows", "10", "--resume")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "never mixes two versions" in refused.stderr and "breast-cancer:2 --resume" in refused.stderr
    finished = batch.score("breast-cancer:2", source, out, "--keep", "id", "--chunk-rows", "10", "--resume")
    assert finished.exit_code == 0, finished.output
    table = pq.read_table(out)
    assert set(table.column("version").to_pylist()) == {2} and table.num_rows == 60


class Unpickled:
    """Creates a file when unpickled: proof that a refused artifact was never loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_tampered_version_is_refused_before_unpickling(batch, tmp_path):
    marker = tmp_path / "unpickled"
    model_file = artifacts.version_dir(batch.root, "breast-cancer", 1) / artifacts.MODEL_FILE
    model_file.chmod(0o644)
    model_file.write_bytes(pickle.dumps(Unpickled(marker)))
    source = tmp_path / "in.csv"
    demo_csv(source)
    result = batch.score("breast-cancer", source, tmp_path / "out.csv", "--keep", "id")
    assert result.exit_code == 1 and result.stdout == ""
    assert "version 1 of 'breast-cancer' refused" in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out.csv").exists()
    details = [json.loads(d) for (d,) in Store.from_url(batch.database_url).fetch(
        "SELECT details FROM audit WHERE action = 'artifact.refused'")]
    assert details and details[-1]["version"] == 1 and details[-1]["by"] == "batch.score"


@pytest.mark.parametrize(("limit", "code"), [("5", 1), ("5%", 1), ("40%", 0), ("10", 0)])
def test_max_rejects_stops_the_run_with_exit_1(batch, tmp_path, limit, code):
    source = tmp_path / "in.csv"
    demo_csv(source, rows=60, negative=6)
    out = tmp_path / "out.csv"
    result = batch.score("breast-cancer", source, out, "--keep", "id", "--max-rejects", limit, "--chunk-rows", "20")
    assert result.exit_code == code, result.output
    assert summary(result)["rejects"] == 6
    rejected = rejects(tmp_path / "out.csv.rejects.jsonl")
    assert [line["keep"]["id"] for line in rejected] == [f"r{i}" for i in range(6)]
    if code:
        assert summary(result)["status"] == "stopped" and not out.exists()
        assert result.stderr.startswith("Error: stopped: 6 ") and "--max-rejects" in result.stderr
        assert not (tmp_path / "out.csv.score-state.json").exists()
    else:
        assert len(pd.read_csv(out)) == 54


def test_a_run_is_recorded_audited_and_sampled_into_the_prediction_log(batch, tmp_path):
    source = tmp_path / "in.csv"
    demo_csv(source, rows=60, negative=2)
    out = tmp_path / "out.csv"
    result = batch.score("breast-cancer", source, out, "--keep", "id", "--monitor-sample", "20", "--chunk-rows", "25")
    assert result.exit_code == 0, result.output
    run = summary(result)
    store = Store.from_url(batch.database_url)
    record = runs.read(store, run["run_id"])
    assert record["status"] == "done" and (record["rows"], record["scored"], record["rejects"]) == (60, 58, 2)
    assert record["input_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest() == run["input_sha256"]
    assert record["actor"].startswith("cli:") and record["version"] == 1 and record["label"] == "production"
    (actor, target, details), = store.fetch("SELECT actor, target, details FROM audit WHERE action = 'batch.score'")
    details = json.loads(details)
    assert target == "model:breast-cancer" and actor == record["actor"]
    assert details | {"input_sha256": record["input_sha256"], "version": 1, "rows": 60, "rejects": 2} == details
    (rows, positions), = store.fetch("SELECT rows, positions FROM prediction_batches WHERE base = ?", (run["run_id"],))
    assert rows == run["monitor_sample"] == 20
    positions = json.loads(positions)
    assert positions == sorted(positions) and not {0, 1} & set(positions)  # rejected rows are not predictions
    ids = pd.read_csv(out)["prediction_id"].tolist()
    logged = f"{run['run_id']}-{positions[0]}"
    assert logged in ids
    answer = batch.client.post("/v1/models/breast-cancer/feedback", json={"feedback": [{"id": logged, "label": 1}]})
    assert answer.get_json()["accepted"] == 1


def test_usage_errors_and_refusals_are_one_line(batch, tmp_path):
    source = tmp_path / "in.csv"
    demo_csv(source)
    assert batch.score("breast-cancer@nope", source, tmp_path / "o.csv", "--keep", "id").exit_code == 1
    unknown = batch.score("breast-cancer", source, tmp_path / "o.csv")
    assert unknown.exit_code == 1 and "columns the model does not declare: id" in unknown.stderr
    assert batch.score("breast-cancer", source, tmp_path / "o.csv", "--ignore-columns", "id").exit_code == 0
    again = batch.score("breast-cancer", source, tmp_path / "o.csv", "--ignore-columns", "id")
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    nothing = batch.score("breast-cancer", source, tmp_path / "p.csv", "--ignore-columns", "id", "--resume")
    assert nothing.exit_code == 1 and "nothing to resume" in nothing.stderr
    regressor = batch.score("diabetes", source, tmp_path / "q.csv", "--probabilities")
    assert regressor.exit_code == 1
    assert batch.score("breast-cancer", source, tmp_path / "r.xlsx").exit_code == 1
    assert batch.score("breast-cancer", source, tmp_path / "r.csv", "--max-rejects", "lots").exit_code == 2


def test_an_empty_input_gives_an_output_with_the_columns_and_no_row(batch, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,code,x,flag,n\n")
    out = tmp_path / "out.parquet"
    result = batch.score("codes", source, out, "--keep", "id", "--probabilities")
    assert result.exit_code == 0 and summary(result)["rows"] == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == ["id", "prediction", "probability_0", "probability_1",
                                                          "prediction_id", "model", "version"]
    assert not (tmp_path / "out.parquet.parts").exists()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_lives(batch, tmp_path):
    import os

    from service.batch import state

    source = tmp_path / "in.csv"
    demo_csv(source)
    out = tmp_path / "out.csv"
    held = state.claim(tmp_path / "out.csv.parts", out)  # what a live run holds
    try:
        busy = batch.score("breast-cancer", source, out, "--keep", "id", "--overwrite")
        assert busy.exit_code == 1 and "another score run is writing out.csv now" in busy.stderr
    finally:
        os.close(held)
    done = batch.score("breast-cancer", source, out, "--keep", "id", "--overwrite")
    assert done.exit_code == 0 and done.stderr == ""  # no progress line when stderr is not a terminal


def test_a_store_that_cannot_record_the_run_stops_it_before_anything_is_written(batch, tmp_path):
    source = tmp_path / "in.csv"
    demo_csv(source)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    result = batch.runner.invoke(__import__("service.cli", fromlist=["cli"]).cli, [
        "score", "breast-cancer:1", str(source), str(tmp_path / "out.csv"), "--keep", "id",
        "--database-url", f"sqlite:///{blocked / 'store.db'}"])
    assert result.exit_code == 1 and result.stdout == "" and result.stderr.count("\n") == 1
    assert not any(p.name.startswith("out.csv") for p in tmp_path.iterdir())  # no output, state or parts
