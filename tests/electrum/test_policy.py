"""The pure pool rules, driven synchronously."""

from __future__ import annotations

import pytest

from stream.electrum.policy import (
    Backoff,
    GrowthPolicy,
    RoundRobin,
    lagging,
    least_loaded,
    majority_tip,
)


def grow(policy: GrowthPolicy, requests: int, *, available: int = 100) -> list[int]:
    """Pool size after each of ``requests`` sequential requests (nothing in flight)."""
    size, sizes = 0, []
    for n in range(1, requests + 1):
        size = policy.target(requests=n, in_flight=1, size=size, available=available)
        sizes.append(size)
    return sizes


def test_first_five_requests_open_one_server_each() -> None:
    assert grow(GrowthPolicy(), 5) == [1, 2, 3, 4, 5]


def test_then_one_more_server_every_ten_requests() -> None:
    sizes = grow(GrowthPolicy(), 35)
    assert sizes[5:15] == [5] * 9 + [6]  # requests 6..15
    assert sizes[24] == 7 and sizes[34] == 8


def test_growth_by_requests_stops_at_min_size() -> None:
    sizes = grow(GrowthPolicy(), 400)
    assert sizes[104] == 15  # request 105 = 5 + 10 * 10
    assert max(sizes) == 15


def test_more_than_fifty_in_flight_adds_two_up_to_max() -> None:
    policy = GrowthPolicy()
    assert policy.target(requests=200, in_flight=50, size=15, available=100) == 15
    assert policy.target(requests=200, in_flight=51, size=15, available=100) == 17
    assert policy.target(requests=200, in_flight=500, size=29, available=100) == 30
    assert policy.target(requests=200, in_flight=500, size=30, available=100) == 30


def test_never_more_than_the_configured_list() -> None:
    assert grow(GrowthPolicy(), 10, available=3)[-1] == 3
    assert GrowthPolicy().target(requests=1, in_flight=999, size=3, available=3) == 3


def test_pool_never_shrinks() -> None:
    assert GrowthPolicy().target(requests=1, in_flight=0, size=12, available=30) == 12


def test_growth_numbers_are_configurable() -> None:
    policy = GrowthPolicy(burst=2, step=3, min_size=4, surge_in_flight=5, surge_step=1, max_size=6)
    assert grow(policy, 12) == [1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4]
    assert policy.target(requests=12, in_flight=6, size=4, available=10) == 5


@pytest.mark.parametrize(
    "kwargs",
    [{"burst": 0}, {"step": 0}, {"min_size": 31}, {"max_size": 0}, {"surge_in_flight": -1}],
)
def test_growth_policy_rejects_bad_numbers(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        GrowthPolicy(**kwargs)


def test_round_robin_cycles_over_a_changing_list() -> None:
    rr = RoundRobin()
    assert [rr.pick("abc") for _ in range(4)] == ["a", "b", "c", "a"]
    assert rr.pick([]) is None
    assert rr.pick("xy") in ("x", "y")


def test_least_loaded_orders_by_in_flight_keeping_ties_stable() -> None:
    assert least_loaded({"a": 3, "b": 0, "c": 1, "d": 0}) == ["b", "d", "c", "a"]
    assert least_loaded({"a": 3, "b": 0}, 1) == ["b"]


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base=1.0, factor=2.0, maximum=10.0)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff.delay(10_000) == 10.0
    with pytest.raises(ValueError):
        Backoff(base=0)


def test_majority_tip_and_lagging_servers() -> None:
    assert majority_tip([]) is None
    assert majority_tip([100, 100, 99]) == 100
    assert majority_tip([100, 98, 98]) == 98
    tips = {"a": 100, "b": 100, "c": 99, "d": 97}
    assert lagging(tips) == {"d"}  # 3 of 4 have reached 99; 97 is two behind
    assert lagging(tips, max_lag=2) == set()
    assert lagging({"a": 100, "b": 100, "c": 99}) == set()
    # A single server ahead is not the majority: the others do not lag.
    assert lagging({"a": 105, "b": 100, "c": 100}) == set()
