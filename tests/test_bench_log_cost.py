"""``python -m bench.log_cost``: its arithmetic and its command line (the run itself starts servers)."""

from pathlib import Path

import pytest

from bench.log_cost import overhead

ROOT = Path(__file__).resolve().parents[1]


def test_overhead_is_the_log_share_of_the_log_off_cost():
    assert overhead(1100.0, 1000.0) == pytest.approx(10.0)
    assert overhead(900.0, 1000.0) == pytest.approx(-10.0)  # noise may make it negative: reported as measured


def test_the_bench_report_prints_the_log_cost_at_each_size():
    from bench import report

    rows = [{"rows": 1, "cpu_us_per_request_log_on": 1100, "cpu_us_per_request_log_off": 1000, "overhead_percent": 10.0,
             "overhead_percent_requests_median_round": 8.5, "overhead_percent_rounds_quartiles": [2.0, 12.5]},
            {"rows": 10_000, "cpu_us_per_request_log_on": 52000, "cpu_us_per_request_log_off": 50000,
             "overhead_percent": 4.0, "overhead_percent_requests_median_round": 3.0,
             "overhead_percent_rounds_quartiles": [-1.5, 6.0]}]
    lines = report.log_cost_lines({"log_cost": rows})
    assert "target <= 10%" in lines[0]
    assert lines[2].split() == ["1", "1,100", "1,000", "10.0%", "8.5%", "2.0..12.5%"]
    assert lines[3].split() == ["10,000", "52,000", "50,000", "4.0%", "3.0%", "-1.5..6.0%"]
    assert report.log_cost_lines({"log_cost": None}) == []


def test_a_summary_gives_the_rounds_median_and_quartiles_of_the_overhead():
    from bench.log_cost import Measured, summary

    on, off = Measured(), Measured()
    for index, (a, b) in enumerate([(1.10, 1.0), (1.0, 1.0), (1.30, 1.0), (0.9, 1.0), (1.05, 1.0)]):
        on.rounds.append(a)
        off.rounds.append(b)
        on.cpu, off.cpu, on.requests, off.requests = on.cpu + a, off.cpu + b, index + 1, index + 1
    for measured in (on, off):
        measured.wall, measured.report_cpu, measured.reports = 1.0, 0.01, 1
    found = summary(1, 5, ROOT, on, off)
    assert found["overhead_percent_requests_median_round"] == pytest.approx(5.0)
    low, high = found["overhead_percent_rounds_quartiles"]
    assert low < 5.0 < high and low == pytest.approx(-5.0) and high == pytest.approx(20.0)
