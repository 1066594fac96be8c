"""Bounded reads of the ``requests`` table for the traffic figures: counts in SQL, latencies sampled.

A window of an hour at a few hundred requests per second is millions of rows; reading them all
into a worker costs seconds and hundreds of MB per report or guard tick. So the database counts
(requests, rows, status classes, fallbacks, per-minute buckets: ``GROUP BY``, through the
``requests_model_ts`` index), and only latencies and prediction summaries are read as rows: the
newest ``limit`` per version, newest first, which the index serves without sorting. What the
figures mean (who a request counts for) is ``service.models.comparison``'s; this module only
reads. No Flask.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Status classes the counts are grouped by.
OK, CLIENT_ERROR, SERVER_ERROR = 0, 1, 2
#: SQL for a row's status class (one of the three above).
STATUS_CLASS = "CASE WHEN status >= 500 THEN 2 WHEN status >= 400 THEN 1 ELSE 0 END"
#: Columns of a sampled row, in order (``Sample.rows``).
SAMPLE_COLUMNS = ("ts", "version", "role", "fallback_from", "status", "latency_ms", "rows", "summary")


@dataclass(frozen=True)
class Group:
    """Requests of one (answering version, role, failed version, status class): how many, how many rows."""

    version: int | None
    role: str
    fallback_from: int | None
    status_class: int
    requests: int
    rows: int


@dataclass(frozen=True)
class Minute:
    """Requests answered by one version within one timeline bucket (client errors excluded)."""

    version: int | None
    bucket: int  # floor(ts / bucket seconds)
    requests: int
    errors: int  # status >= 500


@dataclass
class Window:
    """What ``read`` found: exact counts, exact timeline buckets, and the newest rows of each version."""

    groups: list[Group]
    minutes: list[Minute]
    limit: int
    versions: list[int] | None = None  # read for these versions only (groups of others left out); None = all
    #: version -> its newest rows (dicts of ``SAMPLE_COLUMNS``), newest first: not client errors, and
    #: answered by that version or failed over from it; at most ``limit``.
    samples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def sample_total(self, version: int) -> int:
        """Count every row of the window that ``samples[version]`` draws from (exact, from the groups)."""
        return sum(g.requests for g in self.groups if g.status_class != CLIENT_ERROR and (
            g.version == version or (g.role == "fallback" and g.fallback_from == version)))

    def truncated(self, version: int) -> bool:
        """Tell whether ``samples[version]`` holds fewer rows than the window has."""
        return len(self.samples.get(version, ())) < self.sample_total(version)


def read(store: Any, model: str, since: float, limit: int, *, versions: list[int] | None = None,
         bucket_seconds: float | None = None) -> Window:
    """Read the window of ``model`` since ``since``: counts, per-minute buckets when ``bucket_seconds``
    is given, and the newest ``limit`` rows of each version.

    With ``versions``, only what those versions' figures need: the rows they answered or failed
    over from. Grouping sorts every row it counts (SQLite), so leaving the others out is most of
    the saving for a guard that judges one canary.
    """
    only, params = "", (model, since)
    if versions is not None:
        marks = ", ".join("?" * len(versions))
        only = f" AND (version IN ({marks}) OR fallback_from IN ({marks}))"
        params += (*versions, *versions)
    # With a timeline, one grouping gives both (the scan and sort are the cost, not the groups).
    bucket = "0" if bucket_seconds is None else store.dialect.bucket("ts", bucket_seconds)
    counted = [(Group(_int(v), str(role), _int(failed), int(cls), int(n), int(rows or 0)), int(b))
               for b, v, role, failed, cls, n, rows in store.fetch(
                   f"SELECT {bucket} AS b, version, role, fallback_from, {STATUS_CLASS} AS cls, COUNT(*), SUM(rows)"  # nosec B608  # noqa: S608  constant SQL and placeholders
                   f" FROM requests WHERE model = ? AND ts >= ?{only} GROUP BY b, version, role, fallback_from, cls",
                   params)]
    window = Window(_merge(group for group, _ in counted), [], limit, versions)
    if bucket_seconds is not None:
        window.minutes = _minutes(counted)
    wanted = {g.version for g in window.groups} | {g.fallback_from for g in window.groups if g.role == "fallback"}
    for version in sorted(v for v in wanted if v is not None and (versions is None or v in versions)):
        window.samples[version] = newest(store, model, since, version, limit)
    return window


def newest(store: Any, model: str, since: float, version: int, limit: int) -> list[dict[str, Any]]:
    """Return the newest ``limit`` rows since ``since`` answered by ``version`` or failed over from it,
    client errors left out, newest first."""
    rows = store.fetch(
        f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM requests WHERE model = ? AND ts >= ?"  # nosec B608  # noqa: S608  constant SQL
        " AND (version = ? OR (role = 'fallback' AND fallback_from = ?)) AND (status < 400 OR status >= 500)"
        " ORDER BY ts DESC LIMIT ?", (model, since, version, version, int(limit)))
    return [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in rows]


def _merge(groups: Iterable[Group]) -> list[Group]:
    """Add up the groups of every bucket into one group per (version, role, failed version, class)."""
    totals: dict[tuple[Any, ...], list[int]] = {}
    for g in groups:
        total = totals.setdefault((g.version, g.role, g.fallback_from, g.status_class), [0, 0])
        total[0] += g.requests
        total[1] += g.rows
    return [Group(*key, requests, rows) for key, (requests, rows) in totals.items()]


def _minutes(counted: list[tuple[Group, int]]) -> list[Minute]:
    """Requests and server errors per (answering version, bucket), client errors left out, oldest first."""
    totals: dict[tuple[int, int | None], list[int]] = {}
    for g, bucket in counted:
        if g.status_class != CLIENT_ERROR:
            total = totals.setdefault((bucket, g.version), [0, 0])
            total[0] += g.requests
            total[1] += g.requests if g.status_class == SERVER_ERROR else 0
    return [Minute(version, bucket, n, errors) for (bucket, version), (n, errors) in
            sorted(totals.items(), key=lambda item: item[0][0])]


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
