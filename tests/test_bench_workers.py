"""``python -m bench.workers``: its table and its command line (the run itself starts servers)."""

from pathlib import Path

from bench import workers

ROOT = Path(__file__).resolve().parents[1]


def test_figures_give_medians_and_count_timed_out_probes():
    figures = workers.Figures(probes=[0.002, None, 0.004, 0.010], predictions=[True, False, True, True],
                              rates=[700.0, 800.0, 900.0], cpu_us=[1000.0, 1200.0, 1100.0], p99_ms=[40.0, 50.0, 60.0],
                              rss_mib=[200.0, 210.0, 205.0])
    row = figures.row()
    assert row["probes"] == 4 and row["probes_timed_out"] == 1
    assert row["probe_ms_median"] == 4.0 and row["probe_ms_max"] == 10.0
    assert (row["predictions_meanwhile"], row["predictions_answered"]) == (4, 3)
    assert (row["requests_per_second"], row["cpu_us_per_request"], row["p99_ms"], row["worker_rss_mib"]) == \
        (800, 1100, 50.0, 205)


def test_the_table_has_a_row_per_setting_and_says_when_probes_timed_out():
    answered = workers.Figures(probes=[0.003], predictions=[True], rates=[750.0], cpu_us=[1250.0], p99_ms=[45.0],
                               rss_mib=[206.0]).row()
    stalled = workers.Figures(probes=[None, None], predictions=[False, False], rates=[520.0], cpu_us=[2000.0],
                              p99_ms=[32.0], rss_mib=[206.0]).row()
    rows = {s.name: (stalled if s.name in ("sync", "gthread") else answered) for s in workers.SETTINGS}
    table = workers.lines(rows)
    assert len(table) == 2 + len(workers.SETTINGS)
    assert "| sync (a proxy declared) | 2 of 2 timed out | 0 of 2 | 520 | 2.00 ms | 32.0 ms | 206 MB |" in table
    assert "| buffering, THREADS=1 (the default) | 3.0 ms (max 3.0) | 1 of 1 | 750 | 1.25 ms | 45.0 ms | 206 MB |" in table
