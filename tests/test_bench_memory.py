"""bench.memory against a real Gunicorn server: every process's memory, where it comes from, and the arena."""

import os

import pytest

from bench import memory, procstat
from bench.workload import build_scenarios


def test_the_breakdown_accounts_for_the_whole_process():
    mine = procstat.memory(os.getpid())
    parts = procstat.breakdown(os.getpid())
    if mine is None or parts is None:
        pytest.skip("no /proc/<pid>/smaps here")
    assert set(parts) == set(procstat.KINDS)
    assert sum(p["uss_mib"] for p in parts.values()) == pytest.approx(mine.uss_mib, rel=0.05)
    assert parts["heap"]["uss_mib"] > 0 and parts["file"]["pss_mib"] > 0


def test_two_workers_are_measured_and_reported_against_the_target(demo_root, tmp_path):
    requests = build_scenarios(demo_root, sizes=(1,))
    run = memory.measure_workers(demo_root, tmp_path, 2, requests)
    first, extra = run["worker_memory"]
    assert run["first_pss_mib"] == first["pss_mib"] and run["extra_uss_mib"] == extra["uss_mib"]
    assert 0 < run["share"] == extra["uss_mib"] / first["pss_mib"]
    assert run["total_pss_mib"] == pytest.approx(run["master"]["pss_mib"] + first["pss_mib"] + extra["pss_mib"])
    assert set(run["breakdown"]["extra"]) == set(procstat.KINDS)
    found = {"runs": [run], "target": 0.25,
             "arena_uss_mib": memory.measure_arena(demo_root, requests)}
    assert set(found["arena_uss_mib"]["on"]) == set(found["arena_uss_mib"]["off"]) == {"breast-cancer/1", "diabetes/1"}
    text = "\n".join(memory.lines(found))
    assert "2 workers: first worker PSS" in text and "arena on" in text and "arena off" in text
    [line] = memory.targets(found)
    assert line["measured"] == run["share"] and line["met"] == (run["share"] <= 0.25)
