"""The pool's limits: which settings are accepted at their edges, and what a bad one says."""

from __future__ import annotations

import pytest

from stream.electrum.policy import Backoff, GrowthPolicy


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"burst": 0}, "burst must be >= 1, got 0"),
    ({"step": -3}, "step must be >= 1, got -3"),
    ({"surge_step": 0}, "surge_step must be >= 1, got 0"),
    ({"max_size": 0}, "max_size must be >= 1, got 0"),
    ({"surge_in_flight": -1}, "surge_in_flight must be >= 0, got -1"),
    ({"min_size": 16, "max_size": 15}, "min_size must be <= max_size, got 16 > 15"),
])
def test_a_bad_growth_setting_is_refused_naming_it_and_its_value(
    kwargs: dict[str, int], message: str,
) -> None:
    with pytest.raises(ValueError) as caught:
        GrowthPolicy(**kwargs)
    assert str(caught.value) == message


def test_surging_on_any_request_in_flight_is_allowed() -> None:
    policy = GrowthPolicy(surge_in_flight=0)
    assert policy.target(requests=200, in_flight=0, size=15, available=100) == 15
    assert policy.target(requests=200, in_flight=1, size=15, available=100) == 17


def test_a_fixed_size_pool_may_have_min_size_equal_to_max_size() -> None:
    policy = GrowthPolicy(min_size=4, max_size=4)
    assert policy.target(requests=1000, in_flight=999, size=4, available=10) == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"base": 0.0}, "backoff_base must be > 0, got 0.0"),
    ({"factor": 0.5}, "backoff_factor must be >= 1, got 0.5"),
    ({"base": 2.0, "maximum": 1.0}, "backoff_max must be >= backoff_base, got 1.0"),
])
def test_a_bad_backoff_setting_is_refused_naming_it_and_its_value(
    kwargs: dict[str, float], message: str,
) -> None:
    with pytest.raises(ValueError) as caught:
        Backoff(**kwargs)
    assert str(caught.value) == message


def test_a_factor_of_one_is_a_constant_backoff() -> None:
    backoff = Backoff(base=3.0, factor=1.0, maximum=10.0)
    assert [backoff.delay(n) for n in (1, 2, 50)] == [3.0, 3.0, 3.0]


def test_a_gentle_factor_grows_the_delay_slowly() -> None:
    backoff = Backoff(base=4.0, factor=1.5, maximum=100.0)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [4.0, 6.0, 9.0]


def test_a_cap_equal_to_the_base_keeps_every_delay_at_the_base() -> None:
    backoff = Backoff(base=5.0, factor=2.0, maximum=5.0)
    assert [backoff.delay(n) for n in (1, 2, 10)] == [5.0, 5.0, 5.0]


def test_a_huge_failure_count_does_not_overflow() -> None:
    delay = Backoff(base=1.0, factor=1000.0, maximum=1e300).delay(10**9)
    assert 1e100 < delay <= 1e300
