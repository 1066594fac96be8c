"""What one explained row costs a model version, and how many rows one request may therefore hold.

An explanation costs from microseconds a row (a linear model) to many milliseconds (TreeSHAP on
a large forest, the sampled method), so no fixed row limit fits every model. ``measure`` times
the version's own explanation method and its served predict on reference rows, in CPU seconds of
the calling thread (native pools run one thread per worker, so that is the work done): after one
untimed row it starts at one row and doubles until a step takes ``MIN_STEP_SECONDS`` or reaches its row cap, so a
cheap model is timed on enough rows to see past fixed costs and an expensive one stops after a
few rows. The whole measurement stays well under a second, and it runs when a version loads,
never on a request's path. Fixed costs spread over few rows make the figure an upper bound: a
request at the limit costs at most the budget.

``row_limit`` turns a ``Cost`` and the settings into a ``RowLimit`` that says how it was
derived, for the 422 and the version's metadata. No Flask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

#: A measurement step stops doubling its rows once one step took this much CPU.
MIN_STEP_SECONDS = 0.05
#: Most rows explained (resp. predicted) to measure: enough for any model to pass MIN_STEP_SECONDS or
#: show it is too cheap to matter.
EXPLAIN_ROWS_CAP = 256
PREDICT_ROWS_CAP = 4096
#: Stop doubling once the measurement as a whole has used this much CPU (one row is always timed).
MEASURE_CAP_SECONDS = 0.3
#: Stop once a measurement has taken this long on the clock, whatever the CPU: a model that waits
#: (I/O, sleeps, a lock) must not hold its version's load. One this slow before its first timed
#: row is left unmeasured.
MEASURE_WALL_SECONDS = 1.0
#: Rows a version whose cost could not be measured may explain per request.
UNMEASURED_ROWS = 1

Columns = dict[str, Any]


@dataclass(frozen=True)
class Cost:
    """CPU seconds per explained and per predicted row of one version, and the rows they were timed on."""

    method: str
    explain_seconds_per_row: float
    predict_seconds_per_row: float
    explain_rows: int
    predict_rows: int

    @property
    def factor(self) -> float:
        """What one explained row costs in predicted rows (at least 1: an explanation includes its prediction)."""
        if self.predict_seconds_per_row <= 0:
            return 1.0
        return max(1.0, self.explain_seconds_per_row / self.predict_seconds_per_row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Cost | None:
        """A cost read back from a file another worker wrote, or None when it is not a sane one."""
        try:
            cost = cls(str(data["method"]), float(data["explain_seconds_per_row"]),
                       float(data["predict_seconds_per_row"]), int(data["explain_rows"]), int(data["predict_rows"]))
        except (TypeError, KeyError, ValueError):
            return None
        seconds = (cost.explain_seconds_per_row, cost.predict_seconds_per_row)
        if not all(math.isfinite(s) and s >= 0 for s in seconds) or cost.explain_rows < 1 or cost.predict_rows < 1:
            return None
        return cost


def measure(method: str, explain_rows: Callable[[Columns], Any], predict_rows: Callable[[Columns], Any],
            rows: Callable[[int], Columns | None]) -> Cost | None:
    """Time ``explain_rows`` and ``predict_rows`` on ``rows(n)`` reference rows; None when there are none."""
    explained = _per_row(explain_rows, rows, EXPLAIN_ROWS_CAP)
    if explained is None:
        return None
    predicted = _per_row(predict_rows, rows, PREDICT_ROWS_CAP)
    if predicted is None:
        return None
    return Cost(method, explained[0], predicted[0], explained[1], predicted[1])


def _per_row(run: Callable[[Columns], Any], rows: Callable[[int], Columns | None], cap: int) -> tuple[float, int] | None:
    """CPU seconds per row of ``run`` on the last (largest) step, and that step's rows.

    A first, untimed row pays what only a first call pays (an ONNX Runtime session, caches).
    """
    began = time.monotonic()
    first = rows(1)
    if first is None:
        return None
    run(first)
    if time.monotonic() - began >= MEASURE_WALL_SECONDS:
        return None
    n, spent = 1, 0.0
    while True:
        data = rows(n)
        if data is None:
            return None
        start = time.thread_time()
        run(data)
        took = time.thread_time() - start
        spent += took
        if (took >= MIN_STEP_SECONDS or n >= cap or spent >= MEASURE_CAP_SECONDS
                or time.monotonic() - began >= MEASURE_WALL_SECONDS):
            return took / n, n
        n = min(cap, n * 2)


@dataclass(frozen=True)
class RowLimit:
    """Most rows one explanation request may hold, and what set it."""

    rows: int
    by: str  # EXPLAIN_MAX_SECONDS | EXPLAIN_MAX_ROWS | MAX_BATCH_ROWS | method | unmeasured
    max_seconds: float
    seconds_per_row: float | None
    factor: float | None

    def describe(self) -> str:
        """How the limit was derived, in words a client can act on."""
        if self.by == "EXPLAIN_MAX_SECONDS":
            return (f"EXPLAIN_MAX_SECONDS={self.max_seconds:g} s over {_ms(self.seconds_per_row)} of CPU per "
                    f"explained row, measured when this version loaded")
        if self.by == "unmeasured":
            return "this version's cost per row could not be measured, so it explains one row at a time"
        if self.by == "method":
            return "the explanation method's own row limit"
        return f"the {self.by} setting"

    def to_dict(self) -> dict[str, Any]:
        """The limit as the version's metadata and a 422's details show it."""
        out: dict[str, Any] = {"max_rows": self.rows, "limited_by": self.by, "derivation": self.describe()}
        if self.seconds_per_row is not None:
            out["seconds_per_row"] = float(f"{self.seconds_per_row:.3g}")
            out["max_seconds"] = self.max_seconds
        if self.factor is not None:
            out["cost_factor"] = float(f"{self.factor:.3g}")
        return out


def row_limit(cost: Cost | None, *, max_seconds: float, max_rows: int, batch_rows: int,
              method_rows: int | None = None) -> RowLimit:
    """The smallest of the budget's rows (``max_seconds`` / cost per row, at least 1) and the hard caps.

    ``max_seconds`` 0 leaves only the caps; ``max_rows`` 0 means ``batch_rows``.
    """
    per_row = cost.explain_seconds_per_row if cost is not None else None
    factor = cost.factor if cost is not None else None
    limits = [(batch_rows, "MAX_BATCH_ROWS")]
    if max_rows:
        limits.append((max_rows, "EXPLAIN_MAX_ROWS"))
    if method_rows is not None:
        limits.append((method_rows, "method"))
    if cost is None:
        limits.append((UNMEASURED_ROWS, "unmeasured"))
    elif max_seconds:
        # a float just under a whole number of rows must not lose one to rounding
        budget = math.floor(max_seconds / per_row + 1e-9) if per_row else batch_rows
        limits.append((max(1, budget), "EXPLAIN_MAX_SECONDS"))
    rows, by = min(limits, key=lambda limit: limit[0])
    return RowLimit(rows, by, max_seconds, per_row, factor)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.3g} µs"
