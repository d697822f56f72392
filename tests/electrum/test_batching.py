"""De-duplication, spreading and chunking of batches."""

from __future__ import annotations

import pytest

from stream.electrum.batching import assemble, chunk, dedupe, expand, spread


def test_dedupe_keeps_first_seen_order_and_maps_duplicates_back() -> None:
    dedup = dedupe(["a", "b", "a", "c", "b"])
    assert dedup.unique == ("a", "b", "c")
    assert expand(dedup, ["A", "B", "C"]) == ["A", "B", "A", "C", "B"]


def test_expand_rejects_a_wrong_result_count() -> None:
    with pytest.raises(ValueError):
        expand(dedupe(["a", "b"]), ["A"])


def test_small_batches_stay_on_one_server() -> None:
    assert spread(10, 5) == [range(10)]
    assert spread(0, 5) == []


def test_batches_over_ten_spread_about_25_per_server() -> None:
    assert [len(r) for r in spread(11, 5)] == [11]
    assert [len(r) for r in spread(26, 5)] == [13, 13]
    assert [len(r) for r in spread(100, 5)] == [25, 25, 25, 25]
    assert [len(r) for r in spread(1000, 3)] == [334, 333, 333]


def test_spread_ranges_cover_every_index_once() -> None:
    ranges = spread(977, 7, per_server=25)
    assert [i for r in ranges for i in r] == list(range(977))


def test_chunks_hold_at_most_100() -> None:
    parts = chunk(range(334))
    assert [len(p) for p in parts] == [100, 100, 100, 34]
    assert [i for p in parts for i in p] == list(range(334))
    with pytest.raises(ValueError):
        chunk(range(3), 0)


@pytest.mark.parametrize("servers", [0, 1, 2, 5])
def test_a_batch_of_one_call_is_one_range_of_one(servers: int) -> None:
    assert spread(1, servers) == [range(1)]


def test_spread_covers_every_count_and_server_count_exactly_once() -> None:
    for count in range(1, 80):
        for servers in range(0, 8):
            ranges = spread(count, servers, per_server=7, threshold=3)
            assert [i for r in ranges for i in r] == list(range(count)), (count, servers)
            assert 1 <= len(ranges) <= max(1, servers)


def test_assemble_maps_back_and_refuses_a_missing_result() -> None:
    missing = object()
    dedup = dedupe(["a", "b", "a"])
    assert assemble(dedup, ["A", "B"], missing=missing) == ["A", "B", "A"]
    with pytest.raises(RuntimeError, match=r"1 of 2 unique batch call\(s\) got no result"):
        assemble(dedup, ["A", missing], missing=missing)
    with pytest.raises(ValueError):
        assemble(dedup, ["A"], missing=missing)
