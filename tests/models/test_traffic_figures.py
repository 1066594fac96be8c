"""Bounded traffic figures (``comparison.traffic_figures``, ``report.traffic_timeline``) against the
unbounded reference (``version_figures`` over every row), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from service.models import comparison
from service.monitoring import report
from service.store import RequestRecord

NOW = 1_700_000_000.0
SINCE = NOW - 3600
MODEL = "m"


def record(i, version, latency, *, role="production", status=200, rows=1, fallback_from=None, summary=None, ts=None,
           model=MODEL):
    if summary is not None and not isinstance(summary, str):
        summary = json.dumps(summary)
    # Distinct timestamps: the reference reads oldest first, and so does the bounded path's sample.
    return RequestRecord(f"r{i}", NOW - 3000 + i * 7.25 if ts is None else ts, model, version, role, status,
                         float(latency), rows, fallback_from, None if status < 400 else "boom", summary)


def classifier_traffic():
    records = [record(i, 1, 1 + i % 13, rows=2, summary={"classes": {"0": 3, "1": 1}}) for i in range(40)]
    records += [record(40 + i, 2, 5 + 10 * i, role="canary", summary={"classes": {"1": 1, "2": i % 3}})
                for i in range(12)]
    records += [record(60, 2, 50, role="canary", status=500), record(61, 2, 44, role="canary", status=503),
                record(62, 1, 80, role="fallback", fallback_from=2, summary={"classes": {"0": 1, "1": 1}}),
                record(63, 1, 90, role="fallback", fallback_from=2, status=500),  # the fallback failed too
                record(64, 2, 1, role="canary", status=422), record(65, 1, 2, status=400),
                record(66, 3, 7, role="pinned", summary="not json"), record(67, 3, 9, role="label", rows=5),
                record(68, None, 12, status=500), record(69, None, 3, status=422),
                record(70, 1, 4, role="fallback", summary={"classes": {"0": 1}}),  # no fallback_from: a plain answer
                record(71, 1, 1, ts=SINCE - 1, status=500),  # before the window
                record(72, 1, 1, model="other", status=500)]
    return records


def regressor_traffic():
    rng = np.random.default_rng(3)
    records = []
    for i in range(30):
        values = rng.normal(10, 4, size=1 + i % 4)
        summary = {"n": values.size, "sum": values.sum(), "sumsq": (values ** 2).sum(), "min": values.min(),
                   "max": values.max()}
        records.append(record(i, 1 + i % 2, rng.gamma(2.0, 8.0), rows=values.size, summary=summary))
    records += [record(30, 1, 3, summary={"n": 1, "sum": None, "sumsq": None, "min": None, "max": None}),
                record(31, 2, 70, status=500), record(32, 1, 40, role="fallback", fallback_from=2,
                                                      summary={"n": 1, "sum": 2.0, "sumsq": 4.0, "min": 2, "max": 2})]
    return records


def random_traffic():
    rng = random.Random(7)
    records = []
    for i in range(400):
        version = rng.choice([1, 1, 1, 2, 3])
        status = rng.choice([200] * 12 + [422, 400, 500, 503])
        fallback = version != 1 and rng.random() < 0.1
        answered = 1 if fallback else version
        summary = {"classes": {str(rng.randint(0, 2)): rng.randint(1, 4)}} if status < 400 else None
        records.append(record(i, answered, round(rng.expovariate(0.05), 3), status=status, rows=rng.randint(1, 9),
                              role="fallback" if fallback else rng.choice(["production", "canary", "pinned"]),
                              fallback_from=version if fallback else None, summary=summary))
    return records


TRAFFIC = {"classifier": classifier_traffic, "regressor": regressor_traffic, "random": random_traffic}


def reference_timeline(rows, version):
    """The per-minute timeline as computed from every row (the report before bounded reads)."""
    buckets: dict[int, list] = {}
    for row in rows:
        if row["version"] == version and (row["status"] < 400 or row["status"] >= 500):
            buckets.setdefault(int(row["ts"] // report.TIMELINE_BUCKET_SECONDS), []).append(row)
    return [{"start": key * 60, "end": (key + 1) * 60, "requests": len(group),
             "errors": sum(r["status"] >= 500 for r in group),
             "p50_ms": float(np.percentile([r["latency_ms"] for r in group], 50))} for key, group in sorted(buckets.items())]


@pytest.mark.parametrize("kind", sorted(TRAFFIC))
def test_bounded_figures_equal_the_figures_of_every_row(make_store, kind):
    store = make_store()
    assert store.record_requests(TRAFFIC[kind]())
    rows = store.requests_since(MODEL, SINCE)

    expected = comparison.version_figures(rows)
    assert comparison.traffic_figures(store, MODEL, SINCE) == expected
    assert all(f["latency_sample"] is None for f in expected.values())
    window = store.traffic(MODEL, SINCE, comparison.MAX_TRAFFIC_ROWS, bucket_seconds=report.TIMELINE_BUCKET_SECONDS)
    for version in expected:
        assert report.traffic_timeline(window, version) == reference_timeline(rows, version)


def test_the_figures_say_when_latencies_come_from_the_newest_requests(make_store):
    store = make_store()
    # 90 requests of version 1 over 90 minutes; the 10 oldest failed: outside any small sample.
    store.record_requests([record(i, 1, 1000.0 + i, ts=NOW - 5400 + 60 * i, status=500 if i < 10 else 200,
                                  summary={"classes": {"a": 1}}) for i in range(90)]
                          + [record(100, 1, 5, ts=NOW - 30, status=422)])
    since = NOW - 6000
    rows = store.requests_since(MODEL, since)
    full, bounded = comparison.version_figures(rows)[1], comparison.traffic_figures(store, MODEL, since, limit=20)[1]

    for exact in ("requests", "rows", "errors", "error_rate", "client_errors", "fallbacks_from", "roles"):
        assert bounded[exact] == full[exact]
    assert (bounded["requests"], bounded["errors"], bounded["latency_sample"]) == (90, 10, 20)
    newest = [1000.0 + i for i in range(70, 90)]
    assert bounded["p50_ms"] == float(np.percentile(newest, 50)) != full["p50_ms"]
    assert bounded["p99_ms"] == float(np.percentile(newest, 99))
    assert bounded["predictions"]["counts"] == {"a": 20}

    window = store.traffic(MODEL, since, 20, bucket_seconds=60)
    points, expected = report.traffic_timeline(window, 1), reference_timeline(rows, 1)
    assert [{**p, "p50_ms": None} for p in points] == [{**p, "p50_ms": None} for p in expected]  # counts exact
    # minutes after the oldest sampled one are whole; older ones say nothing rather than guess
    assert [p["p50_ms"] for p in points] == [None] * 71 + [p["p50_ms"] for p in expected[71:]]


@pytest.mark.parametrize("versions", [[2], [1], [3, 2], [9]])
def test_only_the_versions_asked_for_are_read(make_store, versions):
    store = make_store()
    store.record_requests(classifier_traffic())
    figures = comparison.traffic_figures(store, MODEL, SINCE, versions=versions)
    expected = comparison.version_figures(store.requests_since(MODEL, SINCE))
    assert figures == {v: expected[v] for v in sorted(versions) if v in expected}


def test_an_empty_window_has_no_figures(make_store):
    store = make_store()
    assert comparison.traffic_figures(store, MODEL, SINCE) == {}
    assert report.traffic_timeline(store.traffic(MODEL, SINCE, 10, bucket_seconds=60), 1) == []


def test_the_comparison_table_says_which_latencies_are_sampled(make_store, tmp_path):
    from service.models import registry

    store, root = make_store(), tmp_path / "artifacts"
    registry.update(root, MODEL, lambda state: {"action": "test"}, actor="test")
    store.record_requests([record(i, 1 + i % 2, i) for i in range(30)])
    text = comparison.format_table(comparison.compare(store, root, MODEL, 3600, now=NOW, limit=10))
    assert "v1: latencies and predictions from its newest 10 requests" in text
    assert "v2: latencies and predictions from its newest 10 requests" in text
    assert "newest" not in comparison.format_table(comparison.compare(store, root, MODEL, 3600, now=NOW, limit=15))
