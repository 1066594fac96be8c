"""A Spark run written to files, with what a command-line run leaves behind: its row in ``batch_runs``,
its audit record, and a sample of its rows in the prediction log.

The driver cannot hash the input as the command line does: the files live on a cluster's storage
and may be terabytes. The record names them by what the file system lists without reading them:
each file's path and size. ``input_sha256`` holds ``listing:<SHA-256 of that listing>``, the hash
of the listing, not of the content (a file rewritten at the same size keeps it); the audit record
gives the number of files, their total size and the first ``LISTED_FILES`` of them. The counts come
from the scored frame, persisted so that each row is scored once for both outputs and the counts.
The monitoring sample is drawn on the driver: up to ``monitor_sample`` rows of the input (Spark's
``sample``, then ``limit``), scored there by the code and the version the executors used, and
written as one prediction-log record under the run's ids (``<run id>-<row>``), as the command line
writes its own. Needs pyspark. No Flask.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

import numpy as np

from service.batch import runs, sample, scoring
from service.batch.reading import Chunk
from service.batch.spark import ERROR, ROW, Scored
from service.config import Config
from service.monitoring.predlog import PredictionLog
from service.serving.schemas import model_schema

LISTING = "listing:"
LISTED_FILES = 100
ENGINE = "spark"


def input_files(frame: Any) -> list[dict[str, Any]]:
    """The files ``frame`` reads, with their sizes in bytes, from the file system's listing (no content read)."""
    spark = frame.sparkSession
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()  # noqa: SLF001  # the JVM's FileSystem is the listing
    files = []
    for name in sorted(frame.inputFiles()):
        path = jvm.org.apache.hadoop.fs.Path(name)
        files.append({"path": name, "bytes": int(path.getFileSystem(conf).getFileStatus(path).getLen())})
    return files


def listing_sha256(files: list[dict[str, Any]]) -> str:
    text = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return LISTING + hashlib.sha256(text).hexdigest()


def write(scored: Scored, input_name: str, output: str, store: Any, config: Config, *, actor: str = ENGINE,
          monitor_sample: int = 5_000) -> dict[str, Any]:
    """Write ``scored`` to ``output`` (Parquet) and ``output``.rejects (JSON Lines), recorded as a batch run;
    return the run's summary. The record is written first: a store that cannot take it stops the run
    (``sqlite3.Error``) before any row is scored. A store failing later is said in ``warnings``."""
    from pyspark import StorageLevel

    files = input_files(scored.source)
    run = runs.Run(scored.run_id, scored.model, scored.version, scored.label, actor, input_name,
                   listing_sha256(files), time.time())
    details = {"engine": ENGINE, "output": output, "files": len(files), "bytes": sum(f["bytes"] for f in files),
               "listed": files[:LISTED_FILES]}
    runs.started(store, run)
    started, warnings, status, counts = time.perf_counter(), [], runs.FAILED, {}
    scored.frame.persist(StorageLevel.MEMORY_AND_DISK)  # scored once, written twice and counted
    try:
        scored.output.write.mode("overwrite").parquet(output)
        reject_lines(scored).write.mode("overwrite").text(f"{output}.rejects")
        counts = {row["rejected"]: row["count"] for row in scored.frame.groupBy(
            scored.frame[ERROR].isNotNull().alias("rejected")).count().collect()}
        status = runs.DONE
    finally:
        scored.frame.unpersist()
        if status == runs.FAILED:  # an exception on its way: the record says so, the exception goes on
            _close(store, run, status, {}, details, warnings)
    rows = sum(counts.values())
    seconds = time.perf_counter() - started
    logged = 0
    if monitor_sample > 0 and rows:
        try:
            logged = _write_sample(scored, store, config, monitor_sample, rows, seconds)
        except (sqlite3.Error, OSError) as exc:
            warnings.append(f"the monitoring sample was not written to the prediction log: {exc}")
    _close(store, run, status, counts, details, warnings)
    return {"status": status, "run_id": scored.run_id, "model": scored.model, "version": scored.version,
            "label": scored.label, "input": input_name, "input_sha256": run.input_sha256, "files": len(files),
            "output": output, "rejects_file": f"{output}.rejects", "rows": rows, "scored": counts.get(False, 0),
            "rejects": counts.get(True, 0), "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds > 0 else None, "monitor_sample": logged,
            "warnings": warnings}


def reject_lines(scored: Scored) -> Any:
    """One JSON line per reject, as the command line's rejects file has: row, keep, then the error object."""
    from pyspark.sql import functions as F

    rejects = scored.rejects
    kept = F.to_json(F.struct(*scored.keep)) if scored.keep else F.lit("{}")
    # error holds {"error": {...}}: its text without the opening brace closes the line's object
    return rejects.select(F.concat(F.lit('{"row": '), rejects[ROW].cast("string"), F.lit(', "keep": '), kept,
                                   F.lit(", "), F.expr("substr(error, 2)")).alias("value"))


def _close(store: Any, run: runs.Run, status: str, counts: dict[bool, int], details: dict[str, Any],
           warnings: list[str]) -> None:
    try:
        runs.finished(store, run, status, rows=sum(counts.values()), scored=counts.get(False, 0),
                      rejects=counts.get(True, 0), details=details)
    except sqlite3.Error as exc:
        warnings.append(f"the run's record and audit record were not written: {exc}")


def _write_sample(scored: Scored, store: Any, config: Config, size: int, rows: int, seconds: float) -> int:
    """Score up to ``size`` rows of the input on the driver and write them to the prediction log."""
    job, model = scored.job, scored.loaded
    fraction = min(1.0, 2.0 * size / rows)  # about twice as many as needed, then cut
    table = scored.source.sample(withReplacement=False, fraction=fraction, seed=7).limit(size).toArrow()
    if not table.num_rows:
        return 0
    table = table.sort_by(job.row)  # the sample takes rows in the run's order
    numbers = table.column(job.row).to_numpy(zero_copy_only=False).astype(np.int64)
    chunk = Chunk(0, 0, table.num_rows, table=table, text=job.text, numbers=numbers)
    done = scoring.score_chunk(chunk, model, model_schema(model.features), job.allowed, job.keep, job.probabilities,
                               job.run_id)
    if done.result is None:  # every sampled row rejected
        return 0
    picked = sample.Sample(job.run_id, size)
    picked.add(done.positions, done.columns, done.result.predictions, done.result.probabilities)
    return picked.write(PredictionLog(store, pii_key=config.pii_hash_key), model, job.run_id, seconds)
