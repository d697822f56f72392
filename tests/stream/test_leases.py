"""The lease table, driven by hand: no clock, no sockets."""

from __future__ import annotations

import pytest

from stream.leases import Leases


def test_a_lease_runs_only_once_the_last_holder_left() -> None:
    leases = Leases(10)
    leases.hold(["a"])
    leases.hold(["a"])
    leases.lease(["a"], now=0)
    assert leases.next_deadline() is None  # held: nothing runs
    leases.release(["a"], now=5)
    assert leases.due(1000, 10) == []  # one holder left
    leases.release(["a"], now=7)
    assert leases.next_deadline() == 17
    assert leases.due(16.9, 10) == []
    assert leases.due(17, 10) == ["a"]


def test_a_new_holder_within_the_lease_stops_it_and_the_next_release_starts_afresh() -> None:
    leases = Leases(10)
    leases.lease(["a"], now=0)
    leases.hold(["a"])  # a reconnect at t=9
    assert leases.due(50, 10) == []
    leases.release(["a"], now=50)
    assert leases.due(59, 10) == [] and leases.due(60, 10) == ["a"]


def test_due_is_oldest_first_bounded_and_leaves_pinned_and_unleased_alone() -> None:
    leases = Leases(10)
    leases.lease(["a", "b", "c", "d"], now=0)
    leases.release(["a"], now=3)  # never held by this table's count: stays leased, restarts
    leases.pin(["b"])  # an API call made it permanent
    leases.hold(["x"])
    leases.release(["x"], now=1)  # not leased: nothing runs for it
    assert leases.due(100, 2) == ["c", "d"]
    assert leases.due(100, 10) == ["c", "d", "a"]
    leases.pin(["c", "d", "a"])  # the store let them go
    assert leases.due(100, 10) == [] and leases.next_deadline() is None
    assert len(leases) == 0 and leases.stats() == {"leased": 0, "expiring": 0, "held": 0}


def test_holders_are_counted_even_while_an_address_is_pinned() -> None:
    leases = Leases(10)
    leases.hold(["a"])
    leases.pin(["a"])  # DELETE while a stream still names it
    leases.lease(["a"], now=0)  # watched again by a stream: still held
    assert leases.holders("a") == 1 and leases.due(100, 10) == []
    leases.release(["a"], now=1)
    assert leases.is_leased("a") and leases.due(11, 10) == ["a"]


def test_a_lease_needs_a_positive_length() -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        Leases(0)
