"""Score files on a cluster with Spark: the batch command line's checks, one partition at a time.

    spark-submit --master yarn --conf spark.executorEnv.ARTIFACTS_DIR=/shared/artifacts \
        deploy/spark/score_files.py breast-cancer@production hdfs:///in/customers.parquet \
        hdfs:///out/scored --keep customer_id

The driver reads the settings the server reads (ARTIFACTS_DIR, DATABASE_URL, MODEL_SIGNING_KEY,
MODEL_TRUSTED_KEYS, MODEL_BACKEND) from its environment; the registry folder and key files must be
readable at the same paths on every executor (a shared mount), and the project installed in the
executors' Python (its wheel, or ``--py-files``). OUTPUT is a folder of Parquet files with the
command line's output columns, OUTPUT.rejects one of JSON Lines, each line a rejected row's
number, kept columns and the API's 422 error. The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


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
    parser.add_argument("--master", default=None, help="e.g. local[2]; spark-submit's --master otherwise")
    args = parser.parse_args(argv)

    from pyspark import StorageLevel
    from pyspark.sql import SparkSession

    from service.batch.spark import score_dataframe
    from service.config import Config
    from service.errors import ArtifactError, ConfigError

    builder = SparkSession.builder.appName(f"score {args.model}")
    if args.master:
        builder = builder.master(args.master).config("spark.ui.enabled", "false")
    # Arrow batches as large as the command line's chunks: the per-batch work (one numpy pass per column) is then
    # spread over as many rows
    spark = builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000").getOrCreate()
    started = time.perf_counter()
    try:
        if args.input_format == "csv":  # text, typed per feature as the command line types a CSV file
            frame = spark.read.option("header", True).option("inferSchema", False).csv(args.input)
        else:
            frame = spark.read.parquet(args.input)
        try:
            scored = score_dataframe(frame, args.model, Config.from_env(), keep=_names(args.keep),
                                     ignore=_names(args.ignore_columns), probabilities=args.probabilities,
                                     row_column=args.row_column, text=args.input_format == "csv")
        except (ValueError, ConfigError, ArtifactError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        scored.frame.persist(StorageLevel.MEMORY_AND_DISK)  # scored once, written twice
        try:
            scored.output.write.mode("overwrite").parquet(args.output)
            _reject_lines(scored).write.mode("overwrite").text(f"{args.output}.rejects")
            counts = {row["rejected"]: row["count"] for row in scored.frame.groupBy(
                scored.frame["error"].isNotNull().alias("rejected")).count().collect()}
        finally:
            scored.frame.unpersist()
    finally:
        spark.stop()
    rows = sum(counts.values())
    seconds = time.perf_counter() - started
    print(json.dumps({"status": "done", "run_id": scored.run_id, "model": scored.model, "version": scored.version,
                      "label": scored.label, "input": args.input, "output": args.output,
                      "rejects_file": f"{args.output}.rejects", "rows": rows, "scored": counts.get(False, 0),
                      "rejects": counts.get(True, 0), "seconds": round(seconds, 3),
                      "rows_per_second": round(rows / seconds) if seconds > 0 else None}, separators=(",", ":")))
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _reject_lines(scored):
    """One JSON line per reject, as the command line's rejects file has: row, keep, then the error object."""
    from pyspark.sql import functions as F

    rejects = scored.rejects
    kept = F.to_json(F.struct(*scored.keep)) if scored.keep else F.lit("{}")
    # error holds {"error": {...}}: its text without the opening brace closes the line's object
    return rejects.select(F.concat(F.lit('{"row": '), rejects["row"].cast("string"), F.lit(', "keep": '), kept,
                                   F.lit(", "), F.expr("substr(error, 2)")).alias("value"))


if __name__ == "__main__":
    sys.exit(main())
