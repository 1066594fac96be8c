import hashlib
import random

import pytest

from service.models import rollout
from service.models.rollout import choose_version, routing_key_from


def canary_at(weight, version=3):
    return {**rollout.default_rollout(), "canary": {"version": version, "weight": weight}}


KEYS = [f"user-{i}" for i in range(20_000)]


def on_canary(weight, keys=KEYS, model="m"):
    state = canary_at(weight)
    return {k for k in keys if choose_version(model, 2, state, k) == (3, "canary")}


def test_bucket_is_the_first_eight_bytes_of_sha256_mod_10000():
    digest = hashlib.sha256(b"m\0user-7").digest()
    assert rollout.bucket("m", "user-7") == int.from_bytes(digest[:8], "big") % 10_000
    assert 0 <= rollout.bucket("other", "x") < rollout.BUCKETS


def test_the_same_key_always_gets_the_same_version():
    state = canary_at(50)
    for key in ("alice", "bob", "carol", "x" * 256):
        first = choose_version("m", 2, state, key)
        # a keyed request ignores the random source entirely
        assert all(choose_version("m", 2, state, key, rand=random.Random(i).random) == first for i in range(200))


def test_raising_the_weight_only_moves_keys_to_the_canary():
    at_10, at_25 = on_canary(10), on_canary(25)
    assert at_10 <= at_25
    assert len(at_25 - at_10) > 0
    assert on_canary(0) <= at_10 and at_25 <= on_canary(100) == set(KEYS)


def test_keyed_share_is_close_to_the_weight():
    keys = KEYS[:10_000]
    assert 900 <= len(on_canary(10, keys)) <= 1100
    assert 4800 <= len(on_canary(50, keys)) <= 5200


def test_keys_are_spread_per_model():
    # the model name is part of the hash, so one user is not the canary of every model at once
    assert on_canary(10, model="a") != on_canary(10, model="b")


def test_keyless_requests_are_random_at_the_weight():
    rng = random.Random(1234)
    picks = [choose_version("m", 2, canary_at(10), None, rand=rng.random) for _ in range(10_000)]
    share = sum(role == "canary" for _, role in picks) / len(picks)
    assert 0.09 <= share <= 0.11
    assert {p for p in picks} == {(2, "production"), (3, "canary")}


def test_weight_zero_and_no_canary_always_answer_with_production():
    assert on_canary(0) == set()
    always = iter([0.0] * 10)  # the most canary-friendly draw possible
    assert choose_version("m", 2, canary_at(0), None, rand=lambda: next(always)) == (2, "production")
    assert choose_version("m", 2, rollout.default_rollout(), "k") == (2, "production")
    assert choose_version("m", 2, {}, None) == (2, "production")


def test_fractional_weights_use_hundredths_of_a_percent():
    # 0.5 % of 10,000 buckets is 50 buckets
    assert 60 <= len(on_canary(0.5)) <= 140
    assert on_canary(0.5) <= on_canary(0.51) <= on_canary(1)
    assert choose_version("m", 2, canary_at(0.5), None, rand=lambda: 0.004) == (3, "canary")
    assert choose_version("m", 2, canary_at(0.5), None, rand=lambda: 0.005) == (2, "production")
    key = next(k for k in KEYS if rollout.bucket("m", k) == 0)
    assert choose_version("m", 2, canary_at(0.01), key) == (3, "canary")
    assert choose_version("m", 2, canary_at(0.004), key) == (2, "production")  # rounds to 0 buckets


def test_full_weight_sends_every_request_to_the_canary():
    assert choose_version("m", 2, canary_at(100), None, rand=lambda: 0.999999) == (3, "canary")


@pytest.mark.parametrize("header, body, expected", [
    ("h", "b", "h"),
    (None, "b", "b"),
    ("", "b", "b"),
    ("   ", None, None),
    ("x" * 256, None, "x" * 256),
    ("x" * 257, "b", "b"),
    (None, 42, None),
    (None, ["a"], None),
    (None, None, None),
])
def test_routing_key_from_header_then_body(header, body, expected):
    assert routing_key_from(header, body) == expected


def test_rules_are_checked_key_by_key():
    assert rollout.check_rules({"max_error_rate": None, "min_requests": 5}) == {"max_error_rate": None, "min_requests": 5}
    assert rollout.check_rules({"window_seconds": 60, "max_p99_ms": 250}) == {"window_seconds": 60.0, "max_p99_ms": 250.0}
    for bad, message in [({"max_latency": 1}, "1 unknown rule name"), ({"window_seconds": 0}, "window_seconds"),
                         ({"window_seconds": None}, "window_seconds"), ({"min_requests": 0}, "min_requests"),
                         ({"min_requests": 2.5}, "min_requests"), ({"max_error_rate": 1.5}, "max_error_rate"),
                         ({"max_p99_ms": -1}, "max_p99_ms"), ({"max_p99_ms": float("nan")}, "max_p99_ms"),
                         ([], "rules must be an object")]:
        with pytest.raises(ValueError, match=message):
            rollout.check_rules(bad)


@pytest.mark.parametrize("canary", [{"version": 3}, {"version": 3, "weight": 10, "x": 1}, {"version": "3", "weight": 1},
                                    {"version": True, "weight": 1}, {"version": 3, "weight": 101},
                                    {"version": 3, "weight": -1}, {"version": 3, "weight": "10"}, [3, 10]])
def test_bad_canaries_are_refused(canary):
    with pytest.raises(ValueError, match="canary"):
        rollout.check_canary(canary)
