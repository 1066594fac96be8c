"""The Spark entry point in local mode (``local[2]``): the same predictions as the server, the same
rejects as the command line, for a few hundred thousand rows of the demo classifier."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer

from tests.batch.conftest import rejects, summary

pyspark = pytest.importorskip("pyspark", reason="pyspark is a development dependency (requirements-dev.txt)")

ROWS = 200_000
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark():
    """A local Spark with two cores; its JVM is stopped by pid at the end."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    session = (SparkSession.builder.master("local[2]").appName("batch-test").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1").getOrCreate())
    gateway = session.sparkContext._gateway
    try:
        yield session
    finally:
        session.stop()
        process = getattr(gateway, "proc", None)
        gateway.shutdown()
        if process is not None:
            process.stdin.close()  # the gateway's JVM exits when its stdin closes
            process.wait(timeout=60)


def rows_file(path: Path) -> pd.DataFrame:
    """ROWS rows of the classifier's features with an id and a row number; about 1% have a missing
    required value, a few a negative size, so both kinds of reject appear."""
    data = load_breast_cancer(as_frame=True).data
    rng = np.random.default_rng(7)
    frame = data.iloc[rng.integers(0, len(data), ROWS)].reset_index(drop=True)
    frame = frame * rng.uniform(0.95, 1.05, size=frame.shape)
    holes = rng.choice(ROWS, ROWS // 100, replace=False)
    frame.loc[holes, "mean radius"] = np.nan
    frame.insert(0, "id", [f"c{i:07d}" for i in range(ROWS)])
    frame.insert(0, "row", np.arange(ROWS, dtype=np.int64))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=50_000)
    return frame


def test_spark_scores_like_the_command_line_and_the_server(batch, spark, tmp_path):
    from service.batch.spark import ROW, score_dataframe

    source = tmp_path / "rows.parquet"
    frame = rows_file(source)
    out = tmp_path / "cli.parquet"
    result = batch.score("breast-cancer", source, out, "--keep", "id", "--ignore-columns", "row", "--probabilities")
    assert result.exit_code == 0, result.output
    cli = pq.read_table(out).to_pandas()
    cli_rejects = rejects(out.with_name(out.name + ".rejects.jsonl"))
    assert summary(result)["rejects"] == len(cli_rejects) >= ROWS // 100

    config = batch.client.application.config["SERVICE_CONFIG"]
    scored = score_dataframe(spark.read.parquet(str(source)), "breast-cancer", config, keep=("id",),
                             probabilities=True, row_column="row")
    everything = scored.frame.toArrow().to_pandas()  # one pass; output and rejects are its two parts
    output = everything[everything["error"].isna()].drop(columns=[ROW, "error"]).sort_values("id")
    spark_rejects = everything[everything["error"].notna()].sort_values(ROW)

    # the scored rows: the command line's columns and values, ids named by row
    assert list(output.columns) == list(cli.columns)
    assert output["id"].tolist() == cli["id"].tolist()
    assert output["prediction"].tolist() == cli["prediction"].tolist()
    for name in [c for c in cli.columns if c.startswith("probability_")]:
        np.testing.assert_allclose(output[name].to_numpy(), cli[name].to_numpy(), rtol=0, atol=1e-12)
    suffixes = [pid.split("-", 1)[1] for pid in output["prediction_id"]]
    assert suffixes == [pid.split("-", 1)[1] for pid in cli["prediction_id"]]
    assert set(output["version"]) == set(cli["version"]) == {scored.version}

    # the rejects: the command line's, row for row, the API's 422 in each
    assert [{"row": int(r[ROW]), "keep": {"id": r["id"]}, **json.loads(r["error"])}
            for r in spark_rejects.to_dict("records")] == cli_rejects

    # the server's answers for a sample of the same rows, the first reject among them
    features = load_breast_cancer(as_frame=True).data.columns
    picked = frame.iloc[np.r_[np.arange(0, ROWS, ROWS // 400)]]
    good = picked[picked["mean radius"].notna()]
    status, body = batch.api("breast-cancer", good[features].to_dict("records"), probabilities=True)
    assert status == 200, body
    mine = output.set_index("id").loc[good["id"]]
    assert mine["prediction"].tolist() == body["predictions"]
    np.testing.assert_allclose(mine[["probability_0", "probability_1"]].to_numpy(), np.array(body["probabilities"]),
                               rtol=0, atol=1e-12)
    hole = frame.loc[frame["mean radius"].isna()].iloc[0]
    status, body = batch.api("breast-cancer", [hole[features].dropna().to_dict()])  # a missing value is an absent field
    assert status == 422, body
    mine = json.loads(spark_rejects[spark_rejects[ROW] == hole["row"]].iloc[0]["error"])["error"]["details"]["errors"]
    assert [{**entry, "row": 0} for entry in mine] == body["error"]["details"]["errors"]


def test_a_version_tampered_with_is_refused_by_the_workers_and_the_driver(batch, spark, tmp_path):
    from service.batch.spark import score_dataframe
    from service.errors import ArtifactError
    from service.models import artifacts

    config = batch.client.application.config["SERVICE_CONFIG"]
    rows = load_breast_cancer(as_frame=True).data.head(20)
    frame = spark.createDataFrame(pa.Table.from_pandas(rows, preserve_index=False))
    scored = score_dataframe(frame, "breast-cancer:1", config)  # verified on the driver; no row scored yet
    model_file = artifacts.version_dir(batch.root, "breast-cancer", 1) / artifacts.MODEL_FILE
    model_file.chmod(0o644)
    model_file.write_bytes(b"not the packaged model")
    with pytest.raises(Exception, match="version 1 of 'breast-cancer' refused"):  # a worker's load verifies again
        scored.frame.count()
    with pytest.raises(ArtifactError, match="version 1 of 'breast-cancer' refused"):
        score_dataframe(frame, "breast-cancer:1", config)


def test_a_spark_run_is_recorded_audited_and_sampled_as_a_command_line_run_is(batch, spark, tmp_path):
    from service.batch import runs, spark_run
    from service.batch.spark import score_dataframe
    from service.store import Store

    data = load_breast_cancer(as_frame=True).data
    frame = data.iloc[np.arange(3_000) % len(data)].reset_index(drop=True)
    frame.loc[[5, 17], "mean radius"] = np.nan  # two rows the API would refuse
    frame.insert(0, "id", [f"c{i:05d}" for i in range(len(frame))])
    frame.insert(0, "row", np.arange(len(frame), dtype=np.int64))
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=1_000)
    config = batch.client.application.config["SERVICE_CONFIG"]
    store = Store.from_url(batch.database_url)
    scored = score_dataframe(spark.read.parquet(str(source)), "breast-cancer", config, keep=("id",), row_column="row",
                             actor="spark:test")
    out = tmp_path / "out"
    done = spark_run.write(scored, str(source), str(out), store, config, actor="spark:test", monitor_sample=50)
    assert (done["status"], done["rows"], done["scored"], done["rejects"], done["files"]) == ("done", 3_000, 2_998, 2, 1)

    # the run's record: who, which version, the counts, the input named by its listing (no content hash on a cluster)
    record = runs.read(store, done["run_id"])
    assert record["status"] == "done" and (record["rows"], record["scored"], record["rejects"]) == (3_000, 2_998, 2)
    assert record["actor"] == "spark:test" and record["version"] == 1 and record["label"] == "production"
    assert record["input"] == str(source) and record["finished"] is not None
    (actor, target, details), = store.fetch("SELECT actor, target, details FROM audit WHERE action = 'batch.score'")
    details = json.loads(details)
    assert actor == "spark:test" and target == "model:breast-cancer"
    assert details["engine"] == "spark" and details["files"] == 1 and details["bytes"] == source.stat().st_size
    assert details["listed"][0]["path"].endswith(str(source)) and details["listed"][0]["bytes"] == source.stat().st_size
    assert record["input_sha256"] == spark_run.listing_sha256(details["listed"]) == done["input_sha256"]
    assert details | {"run_id": done["run_id"], "rows": 3_000, "scored": 2_998, "rejects": 2, "status": "done"} == details

    # the rejects file: the command line's lines
    lines = [json.loads(line) for part in sorted(Path(f"{out}.rejects").glob("part-*")) for line in part.read_text().splitlines()]
    assert sorted((line["row"], line["keep"]["id"]) for line in lines) == [(5, "c00005"), (17, "c00017")]
    assert all(line["error"]["code"] == "validation_failed" for line in lines)

    # the monitoring sample: at most 50 scored rows, under the output's ids, where feedback finds them
    (logged, positions), = store.fetch("SELECT rows, positions FROM prediction_batches WHERE base = ?",
                                       (done["run_id"],))
    positions = json.loads(positions)
    assert 0 < logged == done["monitor_sample"] == len(positions) <= 50
    assert positions == sorted(positions) and not {5, 17} & set(positions)
    ids = set(pq.read_table(out).column("prediction_id").to_pylist())
    assert {f"{done['run_id']}-{p}" for p in positions} <= ids
    answer = batch.client.post("/v1/models/breast-cancer/feedback",
                               json={"feedback": [{"id": f"{done['run_id']}-{positions[0]}", "label": 1}]})
    assert answer.get_json()["accepted"] == 1
