"""What one caller may send: requests and rows per second (shared by every worker) and a JSON body's size in rows.

``init_app`` builds the shared ``QuotaTable`` (``service.security.quota``) in the metrics folder
when a rate limit is set. Views call ``charge_request()`` once they know who is calling (after
``require_scope``) and ``charge_rows(request)`` once the body is decoded and before the model
runs, so a 429 costs no prediction; an explanation is charged instead by ``charge_explained``,
its rows weighted by what one costs next to a predicted row (``service.explain.cost``). The
caller is the API key id, or, without a key (open mode on loopback), the client address that
``service.api.proxy`` established; a key's own ``rate_limit`` in the keys file replaces the
server's rates for that key. Refusals are counted in Prometheus by limit, never written to the
audit trail. ``json_budget`` sizes the pre-parse check of ``service.protocols.parse_json`` for a
model, and ``model_features`` the codecs' check of a body's columns
(``service.protocols.check_columns``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from flask import Flask, current_app, g, request

from service.config import Config
from service.errors import ModelNotFound, RateLimited
from service.monitoring import metrics
from service.monitoring.multiproc import multiprocess_dir
from service.protocols import container_budget
from service.security.quota import FILE_NAME, QuotaTable, Rate, Refusal
from service.serving.inference import PredictRequest, Target

log = logging.getLogger(__name__)

EXTENSION = "quota"


class Quota:
    """The shared table, the server's rate per limit (0 = off) and the burst of each."""

    def __init__(self, table: QuotaTable, per_second: dict[str, float], burst: dict[str, float]) -> None:
        self.table, self.per_second, self.burst = table, per_second, burst

    def charge(self, caller: str, limit: str, cost: float, per_second: float | None = None) -> Refusal | None:
        """Charge ``caller`` at the server's rate, or at ``per_second`` (its key's own) when given."""
        rate = self.per_second[limit] if per_second is None else per_second
        return self.table.charge(caller, limit, Rate(rate, self.burst[limit]), cost) if rate else None


def init_app(app: Flask, config: Config) -> None:
    """Keep a ``Quota`` on ``app.extensions["quota"]`` when a rate limit or a keys file (whose keys
    may carry their own) is set; None otherwise."""
    quota = None
    if config.rate_limit_requests or config.rate_limit_rows or config.api_keys_file is not None:
        folder = multiprocess_dir()
        path = Path(folder) / FILE_NAME if folder is not None else None  # one process: private memory
        quota = Quota(QuotaTable(path, on_failure=_count_failure),
                      {"requests": config.rate_limit_requests, "rows": config.rate_limit_rows},
                      {"requests": config.rate_limit_requests_burst,
                       "rows": config.rate_limit_rows_burst or config.max_batch_rows})
    app.extensions[EXTENSION] = quota


def charge_request(extensions: dict | None = None) -> None:
    """Count one request for the caller; 429 (``RateLimited``) past its requests per second.

    A view that already holds ``app.extensions`` passes it (here and below): one context lookup fewer.
    """
    _charge("requests", 1, extensions)


def charge_rows(wanted: PredictRequest, extensions: dict | None = None) -> None:
    """Count a decoded request's rows for the caller; 429 past its rows per second."""
    if (current_app.extensions if extensions is None else extensions).get(EXTENSION) is not None:
        _charge("rows", rows_of(wanted), extensions)


def charge_explained(rows: int, factor: float) -> None:
    """Count an explanation's rows at what they cost: each as ``factor`` predicted rows; 429 past the rate.

    The charge is at most the rows burst, so an explanation within its row limit can always pass
    against a full bucket (and empties it) instead of being refused for ever.
    """
    quota: Quota | None = current_app.extensions.get(EXTENSION)
    if quota is None:
        return
    _charge("rows", min(math.ceil(rows * factor), int(quota.burst["rows"])))


def rows_of(wanted: PredictRequest) -> int:
    """Rows in a decoded request, whatever its layout."""
    data = wanted.data
    if wanted.layout == "matrix":
        return int(data.shape[0]) if getattr(data, "ndim", 0) else 1
    if wanted.layout == "columns":
        return max((len(v) for v in data.values() if isinstance(v, list)), default=1)
    return len(data)


def json_budget(name: str, *, per_feature: bool = False, extensions: dict | None = None) -> int:
    """The most arrays and objects a predict body for model ``name`` may hold (see ``container_budget``)."""
    extensions = current_app.extensions if extensions is None else extensions
    max_rows = extensions["limits"].max_rows
    try:
        state = extensions["catalog"].model(name)
    except ModelNotFound:
        return container_budget(max_rows, 0, per_feature=per_feature)  # it will be a 404: no room to grow
    return container_budget(max_rows, state.widest, per_feature=per_feature)


def model_features(target: Target, extensions: dict | None = None) -> int:
    """The feature count a body for ``target`` is sized against: its model's widest loaded version's.

    Any loaded version may answer an unqualified request (canary, fallback), so the widest one
    sets the bound. Raises what the prediction would (404 for an unknown model, version or
    label, 503 when the version that answers is not loaded) before the body is read, so a
    client with a good body is never told it is too wide for a model that cannot answer anyway.
    """
    catalog = (current_app.extensions if extensions is None else extensions)["catalog"]
    catalog.resolve(target.name, target.version, target.label)
    return catalog.model(target.name).widest


def _charge(limit: str, cost: int, extensions: dict | None = None) -> None:
    quota: Quota | None = (current_app.extensions if extensions is None else extensions).get(EXTENSION)
    if quota is None:
        return
    key = g.get("api_key")  # the ApiKey require_scope found: its own rates come with it
    caller = f"key:{key.id}" if key is not None else f"addr:{request.remote_addr}"
    refusal = quota.charge(caller, limit, cost, dict(key.rate_limit).get(limit) if key is not None else None)
    if refusal is None:
        return
    _count_refusal(limit)
    rate = refusal.rate
    raise RateLimited(f"Over the {limit} limit of {rate.per_second:g} per second (burst {rate.burst:g}); "
                      f"retry in {refusal.retry_after} s.",
                      details={"limit": limit, "per_second": rate.per_second, "burst": rate.burst, "cost": cost,
                               "retry_after": refusal.retry_after},
                      retry_after=refusal.retry_after)


def _count_refusal(limit: str) -> None:
    try:
        metrics.current().rate_limited.labels(limit).inc()
    except Exception:
        metrics.warn_once("rate_limited")


def _count_failure(_step: str) -> None:
    try:
        metrics.current().rate_limit_unavailable.inc()
    except Exception:
        metrics.warn_once("rate_limit_unavailable")
