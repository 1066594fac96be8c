"""What an explanation may take from a worker: one at a time, rows within its version's limit, charged by cost.

``init_app`` keeps the budget (``EXPLAIN_MAX_SECONDS``, ``EXPLAIN_MAX_ROWS``, ``MAX_BATCH_ROWS``)
and this worker's single explanation slot. ``running()`` takes the slot without waiting: with
THREADS>1 a second explanation would take the worker's core from its probes and predictions, so
it is refused at once (503 ``explain_busy`` with Retry-After), never queued. ``admission(wanted)``
is the check ``inference.predict`` runs on the chosen version before any work on the rows: the
version's row limit (422 ``too_many_rows_to_explain``), then the rate limit, each row charged at
what explaining it costs next to predicting it (429). The core is ``service.explain``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app

from service import explain
from service.api import limits
from service.config import Config
from service.errors import ExplainBusy
from service.security.quota import WorkSlots
from service.serving.inference import Answer, PredictRequest

EXTENSION = "explaining"


class Explaining:
    """This worker's explanation budget and its one slot."""

    def __init__(self, budget: explain.Budget) -> None:
        self.budget = budget
        self.slots = WorkSlots(None, 1)  # threads of this process only: one explanation per worker


def init_app(app: Flask, config: Config) -> None:
    app.extensions[EXTENSION] = Explaining(
        explain.Budget(config.explain_max_seconds, config.explain_max_rows, config.max_batch_rows))


def budget() -> explain.Budget:
    return current_app.extensions[EXTENSION].budget


@contextmanager
def running() -> Iterator[None]:
    """Hold this worker's explanation slot for the block; 503 with Retry-After when another holds it."""
    slots: WorkSlots = current_app.extensions[EXTENSION].slots
    slot = slots.try_acquire()
    if slot is None:
        # the one running is within the budget: it is done in about EXPLAIN_MAX_SECONDS
        raise ExplainBusy(details={"running": 1}, retry_after=max(1, math.ceil(budget().max_seconds)))
    try:
        yield
    finally:
        slots.release(slot)


def admission(wanted: PredictRequest) -> Callable[[Any], None]:
    """The check ``inference.predict`` runs on the version it chose: row limit, then the charge."""
    rows = limits.rows_of(wanted)

    def admit(model: Any) -> None:
        explain.admit(model, rows, budget())
        cost = explain.cost_of(model)
        limits.charge_explained(rows, cost.factor if cost is not None else 1.0)
    return admit


def explained(done: Answer) -> explain.Explanation:
    """Explain an answer with the version that gave it (a fallback is held to its own row limit)."""
    explain.admit(done.model, done.rows, budget())
    return explain.explain(done.model, done.batch.columns)


def describe(model: Any) -> dict[str, Any]:
    """The version's explanation method and row limit, for its metadata."""
    return explain.describe(model, budget())
