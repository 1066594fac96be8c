"""Score files on a cluster with Spark: the batch command line's checks, one partition at a time.

    spark-submit --master yarn --conf spark.executorEnv.ARTIFACTS_DIR=/shared/artifacts \
        deploy/spark/score_files.py breast-cancer@production hdfs:///in/customers.parquet \
        hdfs:///out/scored --keep customer_id

The driver reads the settings the server reads (ARTIFACTS_DIR, DATABASE_URL, MODEL_SIGNING_KEY,
MODEL_TRUSTED_KEYS, MODEL_BACKEND) from its environment; the registry folder and key files must be
readable at the same paths on every executor (a shared mount), and the project installed in the
executors' Python (its wheel, or ``--py-files``). OUTPUT is a folder of Parquet files with the
command line's output columns, OUTPUT.rejects one of JSON Lines, each line a rejected row's
number, kept columns and the API's 422 error. The run is recorded in DATABASE_URL's store as a
command-line run is (``batch_runs`` and the audit trail: who, which version, the input files'
paths and sizes, the counts; ``service.batch.spark_run``), and ``--monitor-sample`` rows of it,
scored again on the driver, go to the prediction log. The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="score_files.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="MODEL[@LABEL|:VERSION]")
    parser.add_argument("input", help="Parquet or CSV file or folder (any path Spark reads)")
    parser.add_argument("output", help="a folder Spark writes Parquet into")
    parser.add_argument("--input-format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--keep", default="", metavar="COL,COL", help="input columns copied to each output row")
    parser.add_argument("--ignore-columns", default="", metavar="COL,COL", help="input columns left out")
    parser.add_argument("--probabilities", action="store_true", help="one probability_<class> column per class")
    parser.add_argument("--row-column", default=None,
                        help="an integer column numbering the rows (default: Spark's monotonically_increasing_id)")
    parser.add_argument("--monitor-sample", type=int, default=5_000,
                        help="rows written to the prediction log, for drift and data quality (0: none)")
    parser.add_argument("--master", default=None, help="e.g. local[2]; spark-submit's --master otherwise")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    from service.batch import spark_run
    from service.batch.spark import score_dataframe
    from service.config import Config
    from service.errors import ArtifactError, ConfigError
    from service.store import Store

    builder = SparkSession.builder.appName(f"score {args.model}")
    if args.master:
        builder = builder.master(args.master).config("spark.ui.enabled", "false")
    # Arrow batches as large as the command line's chunks: the per-batch work (one numpy pass per column) is then
    # spread over as many rows
    spark = builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000").getOrCreate()
    actor = f"spark:{getpass.getuser()}"
    try:
        if args.input_format == "csv":  # text, typed per feature as the command line types a CSV file
            frame = spark.read.option("header", True).option("inferSchema", False).csv(args.input)
        else:
            frame = spark.read.parquet(args.input)
        try:
            config = Config.from_env()
            scored = score_dataframe(frame, args.model, config, keep=_names(args.keep),
                                     ignore=_names(args.ignore_columns), probabilities=args.probabilities,
                                     row_column=args.row_column, text=args.input_format == "csv", actor=actor)
            summary = spark_run.write(scored, args.input, args.output, Store.from_url(config.database_url), config,
                                      actor=actor, monitor_sample=max(args.monitor_sample, 0))
        except (ValueError, ConfigError, ArtifactError, sqlite3.Error) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    finally:
        spark.stop()
    for warning in summary.pop("warnings"):
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


if __name__ == "__main__":
    sys.exit(main())
