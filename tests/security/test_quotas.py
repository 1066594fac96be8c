"""Rate limits per key, shared by every worker: the core table, the 429 over HTTP, and real Gunicorn."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from service.monitoring import metrics
from service.security import quota
from service.security.keys import create_key, list_keys, revoke_key
from service.security.quota import QuotaTable, Rate
from tests.builders import wait_until

DIABETES_ROW = {"age": 50, "sex": 1, "bmi": 25.1, "bp": 90.0, "s1": 180.0, "s2": 100.0, "s3": 45.0, "s4": 4.0,
                "s5": 4.5, "s6": 90.0}
PREDICT = "/v1/models/diabetes:predict"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the shared table ---------------------------------------------------------------------------


def test_a_burst_passes_then_the_next_waits_one_interval():
    clock = Clock()
    table = QuotaTable(None, clock=clock)
    rate = Rate(per_second=2, burst=3)
    assert [table.charge("a", "requests", rate) for _ in range(3)] == [None, None, None]
    refused = table.charge("a", "requests", rate)
    assert refused is not None and refused.limit == "requests"
    assert refused.wait == pytest.approx(0.5) and refused.retry_after == 1
    clock.now += 0.5
    assert table.charge("a", "requests", rate) is None
    assert table.charge("a", "requests", rate) is not None


def test_callers_and_limits_have_buckets_of_their_own():
    table = QuotaTable(None, clock=Clock())
    rate = Rate(per_second=1, burst=1)
    assert table.charge("key:a", "requests", rate) is None
    assert table.charge("key:a", "requests", rate) is not None
    assert table.charge("key:b", "requests", rate) is None
    assert table.charge("key:a", "rows", Rate(100, 10_000), 10_000) is None


def test_rows_are_counted_by_cost_and_retry_after_says_when_they_fit():
    clock = Clock()
    table = QuotaTable(None, clock=clock)
    rows = Rate(per_second=1000, burst=10_000)
    assert table.charge("k", "rows", rows, 4000) is None
    refused = table.charge("k", "rows", rows, 10_000)
    assert refused is not None and refused.retry_after == 4  # 4,000 rows over, at 1,000 a second
    clock.now += 3.9
    assert table.charge("k", "rows", rows, 10_000) is not None
    clock.now += 0.1
    assert table.charge("k", "rows", rows, 10_000) is None


def test_two_maps_of_one_file_share_the_counts(tmp_path):
    clock = Clock()
    first = QuotaTable(tmp_path / quota.FILE_NAME, clock=clock)
    second = QuotaTable(tmp_path / quota.FILE_NAME, clock=clock)
    rate = Rate(per_second=1, burst=2)
    assert first.charge("k", "requests", rate) is None
    assert second.charge("k", "requests", rate) is None
    assert first.charge("k", "requests", rate) is not None
    assert second.charge("k", "requests", rate) is not None


def test_a_value_no_legal_charge_could_leave_is_forgotten(tmp_path):
    clock = Clock()
    table = QuotaTable(tmp_path / quota.FILE_NAME, clock=clock)
    rate = Rate(per_second=1, burst=2)
    table.charge("k", "requests", rate)
    # a torn write or a stricter setting since: an arrival time years ahead
    home = quota._caller_hash("k") % (table.slots - quota.PROBE + 1)
    quota.SLOT.pack_into(table._map, home * quota.SLOT.size, quota._caller_hash("k"), 1e12, 0.0)
    assert table.charge("k", "requests", rate) is None
    assert table.charge("k", "requests", rate) is None
    assert table.charge("k", "requests", rate) is not None


def test_a_full_table_evicts_instead_of_failing():
    table = QuotaTable(None, slots=quota.PROBE, clock=Clock())
    rate = Rate(per_second=1, burst=1)
    assert all(table.charge(f"k{i}", "requests", rate) is None for i in range(3 * quota.PROBE))


def test_an_unusable_folder_fails_open_and_is_counted(tmp_path):
    failures = []
    table = QuotaTable(tmp_path / "missing" / quota.FILE_NAME, on_failure=failures.append)
    assert not table.usable
    assert table.charge("k", "requests", Rate(1, 1)) is None
    assert table.charge("k", "requests", Rate(1, 1)) is None
    assert failures == ["open", "unavailable", "unavailable"]


def test_a_full_dev_shm_fails_open(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    failures = []
    table = QuotaTable(tmp_path / quota.FILE_NAME, on_failure=failures.append)
    assert table.charge("k", "requests", Rate(1, 1)) is None
    assert failures == ["allocate", "unavailable"]


HOLD_LOCK = """
import fcntl, os, sys, time
from service.security.quota import QuotaTable, PROBE, SLOT, _caller_hash
table = QuotaTable(sys.argv[1])
home = _caller_hash("k") % (table.slots - PROBE + 1)
fcntl.lockf(table._fd, fcntl.LOCK_EX, PROBE * SLOT.size, home * SLOT.size)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_worker_killed_holding_the_lock_leaves_no_lock_behind(tmp_path):
    path = tmp_path / quota.FILE_NAME
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "locked"
        table = QuotaTable(path)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(table.charge, "k", "requests", Rate(1, 5))
            time.sleep(0.2)  # not a wait for a condition: it shows the charge is blocked by the lock
            assert not waiting.done()
            holder.send_signal(signal.SIGKILL)
            assert waiting.result(timeout=10) is None
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()


HOLD_SLOT = """
import sys, time
from service.security.quota import WorkSlots
slots = WorkSlots(sys.argv[1], 1)
assert slots.try_acquire() == 0
print("holding", flush=True)
time.sleep(60)
"""


def test_work_slots_are_shared_by_processes_and_die_with_them(tmp_path):
    path = tmp_path / "slots.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "holding"
        slots = quota.WorkSlots(path, 1)
        assert slots.try_acquire() is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert wait_until(lambda: slots.try_acquire() == 0, message="the dead holder's slot")
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()


def test_work_slots_count_threads_too_and_fail_open(tmp_path):
    slots = quota.WorkSlots(tmp_path / "slots.lock", 2)
    assert [slots.try_acquire(), slots.try_acquire(), slots.try_acquire()] == [0, 1, None]
    slots.release(0)
    assert slots.try_acquire() == 0
    private = quota.WorkSlots(None, 1)
    assert private.try_acquire() == 0 and private.try_acquire() is None
    failures = []
    broken = quota.WorkSlots(tmp_path / "missing" / "slots.lock", 1, on_failure=failures.append)
    assert broken.try_acquire() == -1 and broken.try_acquire() == -1 and failures == ["unavailable"] * 2
    broken.release(-1)


# -- over HTTP, in-process ------------------------------------------------------------------------


def frozen(app) -> Clock:
    """Give the app's shared table a clock that moves only when the test moves it."""
    clock = Clock(time.monotonic())
    app.extensions["quota"].table._clock = clock
    return clock


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "keys.json"
    return path, {"X-API-Key": create_key(path, "alice", ["predict", "read"])}, \
        {"X-API-Key": create_key(path, "bob", ["predict"])}


def test_429_with_retry_after_after_the_burst_and_another_key_unaffected(make_app, keys):
    path, alice, bob = keys
    app = make_app(api_keys_file=path, rate_limit_requests=0.5, rate_limit_requests_burst=2)
    frozen(app)
    client = app.test_client()
    body = {"instances": [DIABETES_ROW]}
    assert [client.post(PREDICT, json=body, headers=alice).status_code for _ in range(2)] == [200, 200]
    refused = client.post(PREDICT, json=body, headers=alice)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit"] == "requests"
    assert client.post(PREDICT, json=body, headers=bob).status_code == 200
    assert client.get("/v1/models/diabetes/monitoring", headers=alice).status_code == 429  # one bucket per key
    assert b'sklearn_server_rate_limited_total{limit="requests"}' in metrics.render()[0]


def test_rows_are_charged_after_decoding_even_when_requests_are_fine(make_app, keys):
    path, alice, _ = keys
    app = make_app(api_keys_file=path, rate_limit_requests=100, rate_limit_rows=1000, max_batch_rows=10_000)
    frozen(app)
    client = app.test_client()
    big = {"instances": [DIABETES_ROW] * 10_000}
    assert client.post(PREDICT, json=big, headers=alice).status_code == 200
    refused = client.post(PREDICT, json=big, headers=alice)
    assert refused.status_code == 429 and refused.get_json()["error"]["details"]["limit"] == "rows"
    assert refused.headers["Retry-After"] == "10"


def test_the_limit_recovers_after_retry_after(make_app, keys):
    path, alice, _ = keys
    app = make_app(api_keys_file=path, rate_limit_requests=1, rate_limit_requests_burst=1)
    clock = frozen(app)
    client = app.test_client()
    body = {"instances": [DIABETES_ROW]}
    assert client.post(PREDICT, json=body, headers=alice).status_code == 200
    refused = client.post(PREDICT, json=body, headers=alice)
    assert refused.status_code == 429
    clock.now += int(refused.headers["Retry-After"])
    assert client.post(PREDICT, json=body, headers=alice).status_code == 200


def test_anonymous_local_callers_share_a_bucket_per_address(make_app):
    client = make_app(rate_limit_requests=0.01, rate_limit_requests_burst=1).test_client()
    body = {"instances": [DIABETES_ROW]}
    assert client.post(PREDICT, json=body).status_code == 200
    assert client.post(PREDICT, json=body).status_code == 429
    other = {"REMOTE_ADDR": "127.0.0.2"}
    assert client.post(PREDICT, json=body, environ_base=other).status_code == 200


@pytest.mark.parametrize("path, body", [
    ("/v2/models/diabetes/infer", {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64",
                                                 "data": list(DIABETES_ROW.values())}]}),
    ("/invocations", {"instances": [DIABETES_ROW]}),
    ("/v1/models/diabetes:explain", {"instances": [DIABETES_ROW]}),
])
def test_every_predict_protocol_is_limited(make_app, path, body):
    client = make_app(rate_limit_requests=0.01, rate_limit_requests_burst=1, default_model="diabetes").test_client()
    assert client.post(path, json=body).status_code == 200
    refused = client.post(path, json=body)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_looking_up_a_logged_explanation_is_limited_too(make_app):
    app = make_app(rate_limit_requests=0.01, rate_limit_requests_burst=2)
    client = app.test_client()
    answer = client.post(PREDICT, json={"instances": [DIABETES_ROW]})
    assert answer.status_code == 200
    url = f"/v1/models/diabetes/predictions/{answer.get_json()['ids'][0]}/explanation"
    store = app.extensions["store"]
    wait_until(lambda: store.fetch("SELECT count(*) FROM prediction_batches", ())[0][0], message="the prediction logged")
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 429


def with_rates(path, **rates) -> None:
    """Give keys of the file their own ``rate_limit`` (as an operator edits it)."""
    doc = json.loads(path.read_text())
    for entry in doc["keys"]:
        if entry["id"] in rates:
            entry["rate_limit"] = rates[entry["id"]]
    path.write_text(json.dumps(doc))


def test_a_key_may_carry_its_own_rates_in_the_keys_file(make_app, keys):
    path, alice, bob = keys
    with_rates(path, alice={"requests": 0.01})
    client = make_app(api_keys_file=path, rate_limit_requests_burst=1).test_client()  # no server-wide rate
    body = {"instances": [DIABETES_ROW]}
    assert [client.post(PREDICT, json=body, headers=alice).status_code for _ in range(2)] == [200, 429]
    assert {client.post(PREDICT, json=body, headers=bob).status_code for _ in range(5)} == {200}


def test_a_key_with_rate_zero_is_not_limited(make_app, keys):
    path, alice, bob = keys
    with_rates(path, bob={"requests": 0})
    client = make_app(api_keys_file=path, rate_limit_requests=0.01, rate_limit_requests_burst=1).test_client()
    body = {"instances": [DIABETES_ROW]}
    assert [client.post(PREDICT, json=body, headers=alice).status_code for _ in range(2)] == [200, 429]
    assert {client.post(PREDICT, json=body, headers=bob).status_code for _ in range(5)} == {200}


def test_key_rates_are_checked_and_survive_other_key_changes(keys):
    path, _, _ = keys
    with_rates(path, alice={"requests": 2, "rows": 500})
    revoke_key(path, "bob")
    (alice,) = list_keys(path)
    assert dict(alice.rate_limit) == {"requests": 2.0, "rows": 500.0}
    for bad in ({"requests": -1}, {"tokens": 1}, {"requests": True}, [1]):
        with_rates(path, alice=bad)
        with pytest.raises(ValueError, match="rate_limit"):
            list_keys(path)


def test_no_limit_set_means_no_table(make_app, keys):
    assert make_app().extensions["quota"] is None
    assert make_app(api_keys_file=keys[0]).extensions["quota"] is not None  # its keys may set rates


# -- real Gunicorn: two workers, one limit ---------------------------------------------------------


def hold_a_worker(server) -> socket.socket:
    """Send half a request: the sync worker that accepts it waits for the rest, so the other one takes the next."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def release(sock: socket.socket) -> None:
    sock.sendall(b"Connection: close\r\n\r\n")
    with sock.makefile("rb") as answer:
        assert answer.readline().startswith(b"HTTP/1.1 200")
    sock.close()


def sockets(pid: int) -> set[str]:
    """The sockets a process has open (``socket:[inode]``)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            found.add(target)
    return found


def pids_of(server, answers: list[requests.Response]) -> list[int]:
    """The worker that answered each response, from the access log."""
    ids = [a.headers["X-Request-ID"] for a in answers]

    def seen() -> dict[str, int] | None:
        found = {r["http"]["request_id"]: r["http"]["pid"] for r in server.log_records()
                 if r.get("http", {}).get("request_id") in ids}
        return found if len(found) == len(set(ids)) else None

    found = wait_until(seen, message="the access log of every request")
    return [found[i] for i in ids]


@pytest.mark.e2e
def test_the_limit_is_shared_by_two_workers_and_recovers(demo_root, server_factory, tmp_path):
    path = tmp_path / "keys.json"
    key = {"X-API-Key": create_key(path, "alice", ["predict"])}
    # Sync workers: a half-sent request holds one (the buffering worker would read it aside and stay free).
    server = server_factory(demo_root, WEB_CONCURRENCY="2", API_KEYS_FILE=str(path),
                            RATE_LIMIT_REQUESTS="0.1", RATE_LIMIT_REQUESTS_BURST="3", wait="/healthz",
                            GUNICORN_CMD_ARGS="--worker-class sync")

    def ask() -> requests.Response:  # a connection of its own: whichever worker is free takes it
        return requests.post(server.base + PREDICT, json={"instances": [DIABETES_ROW]}, headers=key, timeout=30)

    first = hold_a_worker(server)  # the first worker to accept waits, so the burst goes to the other
    spent = [ask() for _ in range(3)]
    assert [a.status_code for a in spent] == [200, 200, 200]
    spender = set(pids_of(server, spent))
    assert len(spender) == 1
    (spender_pid,) = spender
    known = sockets(spender_pid)
    second = hold_a_worker(server)  # only the spender is free to take it
    wait_until(lambda: sockets(spender_pid) - known, message="the spender holding the second half request")
    release(first)
    refused = ask()  # the other worker, which has counted nothing itself
    release(second)
    assert refused.status_code == 429, refused.text
    assert pids_of(server, [refused])[0] != spender_pid, "two workers, one limit"
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 10
    wait_until(lambda: ask().status_code == 200, timeout=retry_after + 10, interval=0.5, message="a 200 again")
