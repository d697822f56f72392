"""The address producer's pure core: history diffs and confirmation updates."""

from __future__ import annotations

import pytest

from stream.producers.address_diff import (
    TxChange,
    confirmation_updates,
    confirmations_at,
    diff_history,
    history_heights,
)

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def test_history_heights_maps_both_mempool_forms_to_zero_and_keeps_order() -> None:
    history = [{"tx_hash": B, "height": 5}, {"tx_hash": A.upper(), "height": 0},
               {"tx_hash": C, "height": -1, "fee": 200}]
    assert list(history_heights(history).items()) == [(B, 5), (A, 0), (C, 0)]


@pytest.mark.parametrize("entry", [{"height": 1}, {"tx_hash": "xy", "height": 1},
                                   {"tx_hash": A, "height": "1"}, "nope"])
def test_history_heights_rejects_what_is_not_a_history(entry: object) -> None:
    with pytest.raises(ValueError, match="not a history entry"):
        history_heights([entry])  # type: ignore[list-item]


def test_new_transactions_are_mempool_or_confirmed_only() -> None:
    changes = diff_history({}, {A: 0, B: 100}, tip=102)
    assert changes == [
        TxChange(B, "confirmed", 100, 3, first_seen=True),
        TxChange(A, "mempool", 0, 0, first_seen=True),
    ]


def test_mined_unmined_moved_and_gone() -> None:
    known = {A: 0, B: 100, C: 101, D: 0}
    current = {A: 102, B: 0, C: 102}
    assert diff_history(known, current, tip=102) == [
        TxChange(A, "confirmed", 102, 1),
        TxChange(C, "confirmed", 102, 1),  # reorged into another block
        TxChange(B, "unconfirmed", 0, 0),  # reorged out, back in the mempool
        TxChange(D, "dropped", 0, 0),  # left the mempool
    ]


def test_nothing_changed_is_no_change() -> None:
    assert diff_history({A: 0, B: 7}, {B: 7, A: 0}, tip=9) == []


def test_confirmations_never_below_one_for_a_mined_transaction() -> None:
    # The server may be a block ahead of the tip the producer has processed.
    assert confirmations_at(105, tip=104) == 1
    assert confirmations_at(100, tip=104) == 5
    assert confirmations_at(0, tip=104) == 0


def test_confirmation_updates_catch_up_every_count_up_to_the_depth() -> None:
    known = {A: 100, B: 0, C: 103, D: 105}  # D: the server is a block ahead of the tip
    updates, emitted = confirmation_updates(known, {A: 1, C: 1}, tip=104, depth=3)
    assert [(u.txid, u.confirmations) for u in updates] == [(A, 2), (A, 3), (C, 2)]
    assert all(u.status == "confirmed" and u.height == known[u.txid] for u in updates)
    assert emitted == {A: 3, C: 2}
    again, _ = confirmation_updates(known, emitted, tip=104, depth=3)
    assert again == []
    later, _ = confirmation_updates(known, emitted, tip=110, depth=3)
    assert [(u.txid, u.confirmations) for u in later] == [(C, 3), (D, 1), (D, 2), (D, 3)]
