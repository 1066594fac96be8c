"""One batch run: resolve and verify the version, then score the input chunk by chunk.

Each chunk is validated row by row (``rows``), its good rows predicted by the verified version
and checked as the API checks an answer (``inference.check_output``), its output and rejects
written as parts, and only then counted in the state file: the unit of progress, and of resume,
is the chunk. Prediction ids are ``<run id>-<row index in the input>``, so a resumed run gives
every row the id the first attempt would have. At the end the parts become the output and
rejects files, the run's record is closed, and its sample is written to the prediction log.
No Flask.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from service.batch import rows, runs, sample, scoring, state, target, writing
from service.batch.reading import Chunk, Input, ahead
from service.errors import ArtifactError
from service.models import artifacts, registry
from service.monitoring.predlog import PredictionLog
from service.security import audit
from service.serving.runtime import LoadedModel
from service.serving.schemas import model_schema

#: Names the output gives its own columns; a key column may not take one.
PREDICTION, PREDICTION_ID, MODEL, VERSION, PROBABILITY = (scoring.PREDICTION, scoring.PREDICTION_ID, scoring.MODEL,
                                                         scoring.VERSION, scoring.PROBABILITY)


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    target: target.Target
    input: Path
    output: Path
    rejects: Path
    input_format: str
    output_format: str
    keep: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    probabilities: bool = False
    chunk_rows: int = 50_000
    max_rejects: int | None = None  # stop when more rows than this are rejected
    max_reject_share: float | None = None  # ... or more than this share of the rows read
    monitor_sample: int = 5_000
    resume: bool = False
    overwrite: bool = False
    input_sha256: Any = None  # a ``digest.Digest`` of the input the caller started meanwhile


@dataclass(frozen=True)
class Services:
    """Where the run reads models and writes its records."""

    root: Path
    store: Any
    signing_key: Any = None
    backend: str = "auto"
    pii_key: str | None = None
    actor: str = "cli:unknown"


class Stopped(Exception):
    """The run rejected more rows than ``--max-rejects`` allows; ``summary`` says how far it got."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


@dataclass
class Progress:
    rows: int  # rows read, including those scored before a resume
    rejected: int
    rows_this_process: int
    seconds: float
    fraction: float | None  # of the input read, when known


def score(options: Options, services: Services, *, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Score ``options.input`` into ``options.output``; return the summary; raise ``Stopped`` past the
    rejects threshold, ``ValueError``/``ArtifactError``/``RegistryUnreadable`` before any row is scored."""
    state_path, parts = state.paths(options.output)
    held = state.claim(parts, options.output)
    try:
        return _score(options, services, progress, state_path, parts)
    finally:
        os.close(held)
        if parts.exists() and not state_path.exists() and not any(parts.iterdir()):
            parts.rmdir()  # refused before any work: leave nothing behind


def _score(options: Options, services: Services, progress: Callable[[Progress], None] | None, state_path: Path,
           parts: Path) -> dict[str, Any]:
    _check_paths(options, state_path, parts)
    verifier = _anchors(services)
    resolved = target.resolve(services.root, options.target, verifier)
    warnings = [resolved.warning] if resolved.warning else []
    source = Input(options.input, options.input_format)
    wanted = state.RunState(
        run_id=f"{time.time_ns():x}{secrets.token_hex(6)}", model=options.target.name, version=resolved.version,
        label=resolved.label, input=str(options.input), input_sha256=_input_sha256(options),
        input_format=options.input_format, output_format=options.output_format, chunk_rows=options.chunk_rows,
        keep=list(options.keep), probabilities=options.probabilities, started=time.time())
    current = wanted
    if options.resume:
        current = state.read(state_path)
        problems = state.differences(current, wanted)
        if problems:
            raise ValueError(f"cannot resume the run in {state_path.name}: {'; '.join(problems)}")
    model = _load(services, options.target.name, resolved.version)
    schema = model_schema(model.features)
    allowed = _check_columns(options, source, model)
    run = runs.Run(current.run_id, current.model, current.version, current.label, services.actor, current.input,
                   current.input_sha256, current.started)
    # the record first: a store that cannot take it stops the run before anything is written
    runs.started(services.store, run, rows=current.rows_done, scored=current.scored, rejects=current.rejected)
    writing.drop_parts_from(parts, current.chunks_done)
    state.write(state_path, current)
    monitor = sample.Sample(current.run_id, options.monitor_sample)
    monitor.load(parts, current.rows_done)
    resumed_from, began = current.rows_done, time.perf_counter()
    status = runs.FAILED
    try:
        floats = [spec.name for spec in schema.specs if spec.kind == "float"]
        for chunk in ahead(source.chunks(options.chunk_rows, [*schema.names, *options.keep], skip=current.chunks_done,
                                         floats=floats)):
            scored, rejected = _score_chunk(chunk, model, schema, allowed, options, current.run_id, parts, monitor)
            current.chunks_done, current.rows_done = chunk.index + 1, chunk.start + chunk.n_rows
            current.scored += scored
            current.rejected += rejected
            monitor.save(parts)
            state.write(state_path, current)
            if progress is not None:
                progress(Progress(current.rows_done, current.rejected, current.rows_done - resumed_from,
                                  time.perf_counter() - began, source.fraction_read()))
            too_many = _over_threshold(options, current)
            if too_many:
                status = runs.STOPPED
                writing.join_rejects(parts, current.chunks_done, options.rejects)
                shutil.rmtree(parts)
                state_path.unlink()
                summary = _summary(options, current, model, resumed_from, time.perf_counter() - began, status, 0)
                _close(services, run, status, current, warnings)
                summary["warnings"] = warnings
                raise Stopped(f"stopped: {too_many}; nothing was written to {options.output.name}, the rejected "
                              f"rows are in {options.rejects.name}", summary)
        if current.chunks_done == 0:  # an empty input still gets an output with the output's columns
            none = np.empty(0, dtype=np.int64)
            writing.write_part(parts, 0, scoring.output_table(Chunk(0, 0, 0, records=[]), none, none, None, model,
                                                              options.keep, options.probabilities,
                                                              _part_run_id(options, current.run_id)),
                               options.output_format)
        complete = partial(scoring.complete, run_id=current.run_id, model=model.name, version=model.version)
        writing.join_output(parts, options.output_format, max(current.chunks_done, 1), options.output,
                            complete if _part_run_id(options, current.run_id) is None else None)
        writing.join_rejects(parts, current.chunks_done, options.rejects)
        shutil.rmtree(parts)
        state_path.unlink()
        status = runs.DONE
    finally:
        if status == runs.FAILED:  # an exception on its way: the state file stays for --resume
            _close(services, run, status, current, warnings)
    seconds = time.perf_counter() - began
    logged = _write_sample(monitor, services, model, current.run_id, seconds, warnings)
    _close(services, run, status, current, warnings)
    summary = _summary(options, current, model, resumed_from, seconds, status, logged)
    summary["warnings"] = warnings
    return summary


def _input_sha256(options: Options) -> str:
    if options.input_sha256 is not None:
        return options.input_sha256.result()
    return artifacts.sha256_file(options.input)


def _check_paths(options: Options, state_path: Path, parts: Path) -> None:
    if options.resume:
        if not state_path.exists():
            raise ValueError(f"nothing to resume: {state_path.name} does not exist beside {options.output.name}")
        return
    if (state_path.exists() or any(parts.iterdir())) and not options.overwrite:
        raise ValueError(f"an interrupted run left {state_path.name}: continue it with --resume, or start again "
                         f"with --overwrite")
    if options.output.exists() and not options.overwrite:
        raise ValueError(f"{options.output} exists; --overwrite replaces it")
    if options.output.resolve() in (options.input.resolve(), options.rejects.resolve()):
        raise ValueError("the input, the output and the rejects file must be three different files")
    for part in parts.iterdir():  # --overwrite: what an interrupted run left (the folder is this run's now)
        part.unlink()
    state_path.unlink(missing_ok=True)


def _anchors(services: Services) -> registry.Verifier:
    from service.models.registry_anchor import RegistryAnchors

    return RegistryAnchors(services.store, actor=services.actor)


def _load(services: Services, name: str, version: int) -> LoadedModel:
    """Load the version, verified; a refusal goes to the audit trail as the server's does."""
    try:
        return target.load(services.root, name, version, signing_key=services.signing_key, backend=services.backend)
    except ArtifactError as exc:
        audit.record_quietly(services.store, services.actor, "artifact.refused", f"{runs.TARGET}{name}",
                             {"version": version, "by": runs.ACTION, "reason": str(exc)})
        raise


def _check_columns(options: Options, source: Input, model: LoadedModel) -> frozenset[str]:
    """Refuse, before any row, a file every row of which would fail; return the keys a row may hold."""
    names = [f["name"] for f in model.features]
    ours = {PREDICTION, PREDICTION_ID, MODEL, VERSION}
    taken = [k for k in options.keep if k in ours or k.startswith(PROBABILITY)]
    if taken:
        raise ValueError(f"--keep names a column the output writes itself: {', '.join(taken)}")
    if options.probabilities and not model.has_probabilities:
        raise ValueError(f"model {model.name!r} version {model.version} does not provide probabilities")
    allowed = frozenset([*names, *options.keep, *options.ignore])
    if source.columns is None:  # JSON Lines: each line is checked like a request's instance
        return allowed
    absent = [k for k in options.keep if k not in source.columns]
    if absent:
        raise ValueError(f"--keep names columns {options.input.name} does not have: {', '.join(absent)}")
    missing = rows.missing_columns(model_schema(model.features), source.columns)
    if missing:
        raise ValueError(f"{options.input.name} lacks required feature columns: {', '.join(missing)}")
    unknown = [c for c in source.columns if c not in allowed]
    if unknown:
        raise ValueError(f"{options.input.name} has columns the model does not declare: {', '.join(unknown)}; "
                         "carry them with --keep or leave them out with --ignore-columns")
    return allowed


def _score_chunk(chunk: Chunk, model: LoadedModel, schema: Any, allowed: frozenset[str], options: Options,
                 run_id: str, parts: Path, monitor: sample.Sample) -> tuple[int, int]:
    """Validate, predict and write one chunk; return (rows scored, rows rejected)."""
    scored = scoring.score_chunk(chunk, model, schema, allowed, options.keep, options.probabilities,
                                 _part_run_id(options, run_id))
    writing.write_part(parts, chunk.index, scored.table, options.output_format)
    if scored.rejects:
        writing.write_rejects(parts, chunk.index, [scoring.reject_line(chunk, i, error, options.keep)
                                                   for i, error in scored.rejects])
    if scored.result is not None:
        monitor.add(scored.positions, scored.columns, scored.result.predictions, scored.result.probabilities)
    return len(scored.positions), len(scored.rejects)


def _part_run_id(options: Options, run_id: str) -> str | None:
    """A Parquet output's parts leave the ids, model and version to the join (``scoring.output_table``);
    CSV and JSON Lines parts are joined byte for byte, so theirs hold the rows whole."""
    return None if options.output_format == "parquet" else run_id


def _over_threshold(options: Options, current: state.RunState) -> str | None:
    """Why the run must stop now, or None."""
    rejected, read = current.rejected, current.rows_done
    if options.max_rejects is not None and rejected > options.max_rejects:
        return f"{rejected} rows rejected, more than --max-rejects {options.max_rejects}"
    if options.max_reject_share is not None and read and rejected / read > options.max_reject_share:
        return (f"{rejected} of {read} rows rejected ({rejected / read:.2%}), more than --max-rejects "
                f"{options.max_reject_share:.2%}")
    return None


def _write_sample(monitor: sample.Sample, services: Services, model: LoadedModel, run_id: str, seconds: float,
                  warnings: list[str]) -> int:
    try:
        return monitor.write(PredictionLog(services.store, pii_key=services.pii_key), model, run_id, seconds)
    except (sqlite3.Error, OSError) as exc:
        warnings.append(f"the monitoring sample was not written to the prediction log: {exc}")
        return 0


def _close(services: Services, run: runs.Run, status: str, current: state.RunState, warnings: list[str]) -> None:
    try:
        runs.finished(services.store, run, status, rows=current.rows_done, scored=current.scored,
                      rejects=current.rejected)
    except sqlite3.Error as exc:
        warnings.append(f"the run's record and audit record were not written: {exc}")


def _summary(options: Options, current: state.RunState, model: LoadedModel, resumed_from: int, seconds: float,
             status: str, logged: int) -> dict[str, Any]:
    done_here = current.rows_done - resumed_from
    return {"status": status, "run_id": current.run_id, "model": model.name, "version": model.version,
            "label": current.label, "input": str(options.input), "input_sha256": current.input_sha256,
            "output": str(options.output) if status == runs.DONE else None, "rejects_file": str(options.rejects),
            "rows": current.rows_done, "scored": current.scored, "rejects": current.rejected,
            "chunks": current.chunks_done, "resumed_from_row": resumed_from or None,
            "seconds": round(seconds, 3), "rows_per_second": round(done_here / seconds) if seconds > 0 else None,
            "monitor_sample": logged}

