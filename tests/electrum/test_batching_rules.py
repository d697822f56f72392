"""Batch planning at its edges: the default threshold, what stays on one server, how many
servers a batch uses, chunks of one, and what the errors say."""

from __future__ import annotations

import pytest

from stream.electrum.batching import chunk, dedupe, expand, spread


def sizes(ranges: list[range]) -> list[int]:
    return [len(r) for r in ranges]


def test_expand_says_how_many_results_it_expected() -> None:
    with pytest.raises(ValueError, match=r"^expected 2 results, got 3$"):
        expand(dedupe(["a", "b", "a"]), ["A", "B", "C"])


def test_the_default_threshold_is_ten_items() -> None:
    # With 5 items per server, 11 items (one over the threshold) go to 3 servers.
    assert sizes(spread(11, 5, per_server=5)) == [4, 4, 3]
    assert sizes(spread(10, 5, per_server=5)) == [10]


@pytest.mark.parametrize("count", [1, 5, 9, 10])
def test_up_to_the_threshold_one_server_takes_all_however_small_per_server_is(
        count: int) -> None:
    assert spread(count, 8, per_server=1) == [range(count)]


@pytest.mark.parametrize("servers", [-1, 0, 1])
def test_without_a_second_server_everything_goes_to_one(servers: int) -> None:
    assert spread(500, servers) == [range(500)]


def test_two_servers_share_a_large_batch() -> None:
    assert spread(60, 2) == [range(0, 30), range(30, 60)]
    assert spread(61, 2) == [range(0, 31), range(31, 61)]


def test_the_number_of_servers_used_is_the_count_over_per_server_rounded_up() -> None:
    assert sizes(spread(51, 10)) == [17, 17, 17]  # ceil(51 / 25) = 3
    assert sizes(spread(50, 10)) == [25, 25]
    assert sizes(spread(1000, 4)) == [250, 250, 250, 250]  # capped at the servers there are


def test_chunks_of_one_are_allowed() -> None:
    assert chunk(range(3), 1) == [[0], [1], [2]]
    assert chunk([4, 2], 2) == [[4, 2]]


@pytest.mark.parametrize("size", [0, -3])
def test_a_chunk_size_below_one_is_refused_by_name(size: int) -> None:
    with pytest.raises(ValueError, match=rf"^max_chunk must be >= 1, got {size}$"):
        chunk(range(3), size)
