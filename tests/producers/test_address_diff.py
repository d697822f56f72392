"""The address producer's pure core: history diffs and confirmation updates."""

from __future__ import annotations

import hashlib

import pytest

from stream.producers.address_diff import (
    TxChange,
    confirmation_updates,
    confirmations_at,
    diff_history,
    history_heights,
    history_status,
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


def test_an_unchanged_transaction_does_not_stop_the_diff() -> None:
    # B (mined first, so diffed first) is unchanged; everything after it still counts.
    known = {B: 100, A: 0, D: 0}
    current = {B: 100, C: 101, A: 102}
    assert diff_history(known, current, tip=102) == [
        TxChange(C, "confirmed", 101, 2, first_seen=True),
        TxChange(A, "confirmed", 102, 1),
        TxChange(D, "dropped", 0, 0),
    ]
    # Unchanged mempool entries before a new one, and a known one kept.
    assert diff_history({A: 0, B: 0}, {A: 0, B: 0, C: 0}, tip=5) == [
        TxChange(C, "mempool", 0, 0, first_seen=True)]


# -- history_status: Electrum's status of a history --------------------------------------


def electrum_status(*entries: tuple[str, int]) -> str:
    """The protocol's definition, spelled out: sha256 over "txid:height:" of each entry."""
    text = "".join(f"{txid}:{height}:" for txid, height in entries)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def test_history_status_of_no_history_is_none() -> None:
    assert history_status([]) is None


def test_history_status_of_one_confirmed_transaction() -> None:
    status = history_status([{"tx_hash": A, "height": 7}])
    assert status == hashlib.sha256(f"{A}:7:".encode()).hexdigest()
    assert status == electrum_status((A, 7))
    assert len(status) == 64 and status == status.lower()


def test_history_status_keeps_mempool_heights_zero_and_minus_one_as_sent() -> None:
    # ElectrumX sends -1 for a mempool transaction with unconfirmed parents; the status
    # hashes the height as the server sent it (unlike history_heights, which reads 0).
    history = [{"tx_hash": A, "height": 5}, {"tx_hash": B, "height": 0},
               {"tx_hash": C, "height": -1, "fee": 300}]
    assert history_status(history) == electrum_status((A, 5), (B, 0), (C, -1))
    assert history_status(history) == hashlib.sha256(
        f"{A}:5:{B}:0:{C}:-1:".encode()).hexdigest()
    as_zero = [{"tx_hash": A, "height": 5}, {"tx_hash": B, "height": 0},
               {"tx_hash": C, "height": 0}]
    assert history_status(as_zero) != history_status(history)


def test_history_status_follows_the_servers_order() -> None:
    forward = [{"tx_hash": A, "height": 1}, {"tx_hash": B, "height": 2}]
    backward = forward[::-1]
    assert history_status(forward) == electrum_status((A, 1), (B, 2))
    assert history_status(backward) == electrum_status((B, 2), (A, 1))
    assert history_status(forward) != history_status(backward)


def test_history_status_known_vectors() -> None:
    # sha256 of the literal texts "<txid>:0:" and "<txid>:0:<b*64>:-1:", taken once with
    # hashlib and checked again here.
    txid = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    one = "29beb5f7aa420d38725efea2ca01053de004f20816024af33a7a80a6b5a95a5b"
    two = "f48391d1183f8892e75b785103499b4a399b851541c13aa4c62f536fb4bdcb67"
    assert hashlib.sha256(f"{txid}:0:".encode()).hexdigest() == one
    assert hashlib.sha256(f"{txid}:0:{B}:-1:".encode()).hexdigest() == two
    assert history_status([{"tx_hash": txid, "height": 0}]) == one
    assert history_status([{"tx_hash": txid, "height": 0},
                           {"tx_hash": B, "height": -1}]) == two
