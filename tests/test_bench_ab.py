"""bench.ab: medians over rounds, and the ratios the issue's targets name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import ab, compare
from bench.workload import Scenario


def run(rps: float, cpu_seconds: float, requests: int) -> compare.Run:
    result = SimpleNamespace(requests=requests, requests_per_second=rps, p50_ms=1.0, p99_ms=2.0)
    return compare.Run(result, cpu_seconds, 2)


def test_a_servers_rounds_are_summarised_by_their_medians():
    figures = ab.summary([run(100.0, 0.5, 1000), run(300.0, 0.3, 1000), run(200.0, 0.4, 1000)])
    assert figures["rps"] == 200.0 and figures["cpu_us"] == pytest.approx(400.0)
    assert ab.summary([])["rps"] is None


def test_the_report_gives_cpu_against_the_floor_and_requests_against_the_lean_app():
    scenario = Scenario("m", 1, False, b"{}", None)
    figures = {name: {"rps": rps, "cpu_us": cpu, "p50_ms": 1.0, "p99_ms": 3.0}
               for name, rps, cpu in (("server", 1300.0, 600.0), ("base", 1000.0, 900.0), ("lean", 1000.0, 700.0),
                                      ("naive", 500.0, 1400.0), ("floor", 5000.0, 300.0))}
    text = ab.format_scenario(scenario, figures)
    assert "server   CPU/req vs floor 2.00x   req/s vs lean 1.30x   req/s vs naive 2.60x   p99/p50 3.0x" in text
    assert "base     CPU/req vs floor 3.00x   req/s vs lean 1.00x" in text
