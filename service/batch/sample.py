"""The rows of a run that go to the prediction log, so drift and data quality see batch traffic.

A run of a million rows must not write a million rows to the log, nor know its length before it
ends (CSV and JSON Lines do not say). The sample is a bottom-k one: each row's priority is a
fixed hash of the run's id and the row's index, and the ``size`` rows of lowest priority are
kept as chunks pass, so memory is ``size`` rows and every row has the same chance. At the end
they are written as ONE prediction-log record (``PredictionLog.encode`` with the rows'
positions, then ``write_encoded``) under the run's ids, where feedback finds them. The sample is
saved beside the run's parts after each chunk, so a resumed run's sample still covers the rows
scored before the interruption. No Flask.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from service.monitoring.predlog import PredictionLog

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
FILE = "sample.arrow"  # Arrow IPC: saved after every chunk, so written as is, never encoded
INPUT, PREDICTION, PROBABILITY = "input:", "prediction", "probability:"


def _priorities(seed: np.uint64, positions: np.ndarray) -> np.ndarray:
    """splitmix64 of (seed + position): a fixed, well-spread number per row of the run."""
    with np.errstate(over="ignore"):
        z = positions.astype(np.uint64) * _GOLDEN + seed
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Sample:
    """The ``size`` rows of lowest priority seen so far, with their inputs and outputs."""

    def __init__(self, run_id: str, size: int):
        self.size = size
        self.seed = np.uint64(int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big"))
        self.positions = np.empty(0, dtype=np.int64)
        self.priorities = np.empty(0, dtype=np.uint64)
        self.columns: dict[str, np.ndarray] = {}
        self.predictions: np.ndarray | None = None
        self.probabilities: np.ndarray | None = None

    def add(self, positions: np.ndarray, columns: dict[str, np.ndarray], predictions: np.ndarray,
            probabilities: np.ndarray | None) -> None:
        """Offer a chunk's scored rows (``positions`` in the run, ascending) to the sample."""
        if self.size <= 0 or not len(positions):
            return
        priorities = _priorities(self.seed, positions)
        take = np.arange(len(positions))
        if len(take) > self.size:
            take = np.sort(np.argpartition(priorities, self.size - 1)[:self.size])
        if len(self.positions) == self.size:  # full: only rows beating the worst kept row can enter
            take = take[priorities[take] < self.priorities.max()]
            if not len(take):
                return
        self.positions = np.concatenate([self.positions, positions[take]])
        self.priorities = np.concatenate([self.priorities, priorities[take]])
        self.columns = {name: _join(self.columns.get(name), values[take]) for name, values in columns.items()}
        self.predictions = _join(self.predictions, np.asarray(predictions)[take])
        if probabilities is not None:
            self.probabilities = _join(self.probabilities, np.asarray(probabilities)[take])
        if len(self.positions) > self.size:
            self._keep(np.argpartition(self.priorities, self.size - 1)[:self.size])

    def _keep(self, rows: np.ndarray) -> None:
        rows = rows[np.argsort(self.positions[rows], kind="stable")]
        self.positions, self.priorities = self.positions[rows], self.priorities[rows]
        self.columns = {name: values[rows] for name, values in self.columns.items()}
        self.predictions = self.predictions[rows] if self.predictions is not None else None
        self.probabilities = self.probabilities[rows] if self.probabilities is not None else None

    def save(self, folder: Path) -> None:
        """Write the sample beside the run's parts (atomically); a value Parquet cannot hold skips it."""
        if not len(self.positions):
            return
        named = {"position": self.positions, "priority": self.priorities,
                 **{INPUT + name: values for name, values in self.columns.items()}, PREDICTION: self.predictions}
        if self.probabilities is not None:
            named.update({f"{PROBABILITY}{j}": self.probabilities[:, j] for j in range(self.probabilities.shape[1])})
        try:
            table = pa.table({name: pa.array(values) for name, values in named.items()},
                             metadata={"objects": ",".join(n for n, v in named.items() if v.dtype == object)})
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column of mixed types: a resume samples afresh
            return
        tmp = folder / f".{FILE}.tmp"
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, folder / FILE)

    def load(self, folder: Path, rows_done: int) -> None:
        """Take back the sample an interrupted run saved, if any: its rows among the first ``rows_done``
        (a chunk saved in the sample but not yet counted in the state is scored, and offered, again)."""
        path = folder / FILE
        if not path.exists():
            return
        with pa.OSFile(str(path)) as source:  # read, not mapped: the file is replaced after the next chunk
            table = pa.ipc.open_file(source).read_all()
        objects = set(filter(None, table.schema.metadata.get(b"objects", b"").decode().split(",")))

        def array(name: str) -> np.ndarray:
            column = table.column(name)
            if name not in objects:
                return column.to_numpy()
            values = np.empty(len(column), dtype=object)
            values[:] = column.to_pylist()
            return values

        self.positions, self.priorities = array("position"), array("priority")
        self.columns = {name[len(INPUT):]: array(name) for name in table.column_names if name.startswith(INPUT)}
        self.predictions = array(PREDICTION)
        probabilities = [array(name) for name in table.column_names if name.startswith(PROBABILITY)]
        self.probabilities = np.column_stack(probabilities) if probabilities else None
        self._keep(np.flatnonzero(self.positions < rows_done))

    def write(self, log: PredictionLog, model: Any, run_id: str, seconds: float) -> int:
        """Write the sample as one prediction-log record; return its rows. Raises ``sqlite3.Error``."""
        if not len(self.positions):
            return 0
        self._keep(np.arange(len(self.positions)))  # in position order, as the log stores rows
        positions = self.positions.tolist()
        batch = log.encode(model.name, model.version, run_id, [f"{run_id}-{p}" for p in positions], self.columns,
                           self.predictions, self.probabilities, seconds * 1000, model.features, ts=time.time(),
                           subject=model.manifest.get("subject"), positions=positions)
        if batch is None:
            return 0
        with log.store.transaction() as db:
            log.write_encoded(db, batch)
        return batch.rows


def _join(kept: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    if kept is None or not len(kept):
        return new
    if kept.dtype != new.dtype and object in (kept.dtype, new.dtype):
        return np.concatenate([kept.astype(object), new.astype(object)])
    return np.concatenate([kept, new])
