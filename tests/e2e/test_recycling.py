"""Workers are replaced for memory growth, gracefully, and come up with their sessions open."""

from __future__ import annotations

import pytest

from tests.builders import wait_until

pytestmark = pytest.mark.e2e

ROW = {"instances": [[50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90]]}


def boots(server) -> int:
    return server.log_path.read_text().count("Booting worker with pid")


def test_a_worker_whose_memory_grew_is_replaced_without_failing_a_request(demo_root, server_factory):
    # any growth at all (1 KiB) is over the limit: every worker is replaced after its first 64 requests
    server = server_factory(demo_root, WORKER_MEMORY_GROWTH_MB="0.001")
    statuses = [server.post("/v1/models/diabetes:predict", json=ROW).status_code for _ in range(300)]
    assert statuses == [200] * 300
    assert "worker memory grew past WORKER_MEMORY_GROWTH_MB" in server.log_path.read_text()
    assert wait_until(lambda: boots(server) > 2, timeout=30, message="a replacement worker booted")


def test_the_default_limits_replace_nobody_under_a_short_load(demo_root, server_factory):
    server = server_factory(demo_root)
    for _ in range(300):
        assert server.post("/v1/models/diabetes:predict", json=ROW).status_code == 200
    assert boots(server) == 2 and "worker memory grew" not in server.log_path.read_text()


def test_a_bad_recycling_setting_stops_the_start_with_one_line(demo_root, server_factory):
    with pytest.raises(RuntimeError, match="WORKER_MAX_REQUESTS must be 0"):
        server_factory(demo_root, WORKER_MAX_REQUESTS="-1")
