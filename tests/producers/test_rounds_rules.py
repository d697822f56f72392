"""The pure steps of an address round, as a stream user sees them: the exact data of
``address`` and ``tx.large`` events (README, "Events"), which transactions count as large
and when, and when held-back losses are read again. No sockets, no clock."""

from __future__ import annotations

from collections.abc import Container, Mapping

from batcher.events import Event
from stream.producers.address_diff import TxChange
from stream.producers.rounds import (
    HistoryDiff,
    address_event,
    hold_losses,
    large_tx_data,
    large_tx_events,
)
from stream.producers.txparse import OutPoint, Output, ParsedTx
from tests.producers.scripted import ME, OTHER, A, B, C, D

TS = 1_700_000_123.25  # when the round saw the changes: every event carries it
THRESHOLD = 100_000  # CHAINWIRE_LARGE_TX_SATS in these tests


def _tx(txid: str, *values: int) -> ParsedTx:
    """A transaction paying ``values`` alternately to ME and OTHER, spending D:0."""
    outputs = tuple(Output(ME if i % 2 == 0 else OTHER, v) for i, v in enumerate(values))
    return ParsedTx(txid, outputs, (OutPoint(D, 0),))


def _diff(*changes: TxChange) -> HistoryDiff:
    return HistoryDiff({}, changes)  # large_tx_events reads only the changes


def _large(diffs: Mapping[str, HistoryDiff], parsed: Mapping[str, ParsedTx], *,
           reported: Container[str] = (), scan_blocks: bool = False) -> list[Event]:
    return large_tx_events(diffs, parsed, reported=reported, threshold=THRESHOLD,
                           scan_blocks=scan_blocks, ts=TS)


def _keys(events: list[Event]) -> list[str]:
    return [e.key for e in events]


# -- address events ------------------------------------------------------------------------


def test_an_address_event_carries_exactly_the_documented_fields() -> None:
    change = TxChange(A, "confirmed", 812, 3)
    event = address_event(ME, change, {A: (80_000, 1_000), B: (7, 7)}, TS)
    assert (event.type, event.key, event.ts) == ("address", ME, TS)
    assert dict(event.data) == {
        "address": ME, "txid": A, "height": 812, "status": "confirmed",
        "received_sats": 80_000, "sent_sats": 1_000, "confirmations": 3,
    }


def test_an_unpriced_change_reports_nothing_received_and_nothing_sent() -> None:
    # Amounts are known for B only: A's event says 0 and 0, not B's figures nor a guess.
    event = address_event(OTHER, TxChange(A, "mempool", 0, 0, first_seen=True),
                          {B: (5_000, 2_000)}, TS)
    assert dict(event.data) == {
        "address": OTHER, "txid": A, "height": 0, "status": "mempool",
        "received_sats": 0, "sent_sats": 0, "confirmations": 0,
    }
    assert event.ts == TS


# -- tx.large ------------------------------------------------------------------------------


def test_tx_large_data_has_every_output_and_their_total() -> None:
    tx = ParsedTx(A, (Output(ME, 60_000), Output(None, 0), Output(OTHER, 40_001)),
                  (OutPoint(D, 1),))
    assert large_tx_data(tx, 0) == {
        "txid": A, "height": 0, "total_out_sats": 100_001,  # 60_000 + 0 + 40_001
        "outputs": [{"address": ME, "value_sats": 60_000},
                    {"address": None, "value_sats": 0},
                    {"address": OTHER, "value_sats": 40_001}],
    }


def test_a_large_mempool_transaction_is_reported_with_its_data_and_the_round_time() -> None:
    events = _large({ME: _diff(TxChange(A, "mempool", 0, 0, first_seen=True))},
                    {A: _tx(A, 70_000, 30_000)})
    assert len(events) == 1
    event = events[0]
    assert (event.type, event.key, event.ts) == ("tx.large", A, TS)
    assert dict(event.data) == {
        "txid": A, "height": 0, "total_out_sats": 100_000,
        "outputs": [{"address": ME, "value_sats": 70_000},
                    {"address": OTHER, "value_sats": 30_000}],
    }


def test_without_the_block_scan_a_transaction_first_seen_mined_is_reported_at_its_height(
) -> None:
    events = _large({ME: _diff(TxChange(A, "confirmed", 1, 5, first_seen=True))},
                    {A: _tx(A, 150_000)}, scan_blocks=False)
    assert _keys(events) == [A]
    assert events[0].data["height"] == 1 and events[0].ts == TS


def test_with_the_block_scan_mined_transactions_are_left_to_it_but_mempool_ones_are_not(
) -> None:
    # A was mined in block 1 (the lowest a mined height can be): the block scan reports it.
    # B, after it in the same history, is in the mempool: only this producer can report it.
    diffs = {ME: _diff(TxChange(A, "confirmed", 1, 1, first_seen=True),
                       TxChange(B, "mempool", 0, 0, first_seen=True))}
    events = _large(diffs, {A: _tx(A, 500_000), B: _tx(B, 200_000)}, scan_blocks=True)
    assert _keys(events) == [B]
    assert events[0].data["height"] == 0


def test_a_total_exactly_at_the_threshold_is_large_one_sat_below_is_not() -> None:
    # "whose outputs total at least CHAINWIRE_LARGE_TX_SATS"; the small one comes first so
    # that skipping it must not end the scan of the history.
    diffs = {ME: _diff(TxChange(B, "mempool", 0, 0, first_seen=True),
                       TxChange(A, "mempool", 0, 0, first_seen=True))}
    parsed = {B: _tx(B, 50_000, 49_999), A: _tx(A, 50_000, 50_000)}
    assert _keys(_large(diffs, parsed)) == [A]


def test_only_transactions_first_seen_in_this_round_are_candidates() -> None:
    # A was seen before (it only confirms now) although it is large; C could not be
    # fetched. Neither stops D, later in the same history, from being reported.
    diffs = {ME: _diff(TxChange(A, "confirmed", 90, 1),
                       TxChange(C, "mempool", 0, 0, first_seen=True),
                       TxChange(D, "mempool", 0, 0, first_seen=True))}
    parsed = {A: _tx(A, 900_000), D: _tx(D, 100_000)}
    assert _keys(_large(diffs, parsed)) == [D]


def test_a_transaction_reported_in_an_earlier_round_is_not_reported_again() -> None:
    diffs = {ME: _diff(TxChange(A, "mempool", 0, 0, first_seen=True),
                       TxChange(B, "mempool", 0, 0, first_seen=True))}
    parsed = {A: _tx(A, 300_000), B: _tx(B, 300_000)}
    assert _keys(_large(diffs, parsed, reported={A})) == [B]


def test_a_transaction_of_two_watched_addresses_is_reported_once() -> None:
    # A pays ME and OTHER, both watched: it is first seen in both histories this round.
    diffs = {ME: _diff(TxChange(A, "mempool", 0, 0, first_seen=True)),
             OTHER: _diff(TxChange(A, "mempool", 0, 0, first_seen=True),
                          TxChange(B, "mempool", 0, 0, first_seen=True))}
    parsed = {A: _tx(A, 60_000, 60_000), B: _tx(B, 100_000)}
    assert _keys(_large(diffs, parsed)) == [A, B]


# -- losses held back ----------------------------------------------------------------------


def test_held_losses_are_read_again_when_the_oldest_one_is_due() -> None:
    # A (reorged out, back in the mempool) and B (gone) are both lost and both still young
    # at now=20 with a 10 s grace. Whichever was seen lost first, at 12, is due at 22; the
    # other, first seen lost now, at 30. The recheck is the earlier of the two. Both orders
    # are tried over the same changes, so the answer cannot depend on which loss the
    # function happens to look at last.
    known = {A: 100, B: 0}
    changes = [TxChange(A, "unconfirmed", 0, 0), TxChange(B, "dropped", 0, 0)]
    for first, then in ((A, B), (B, A)):
        held = hold_losses(known, {first: 12.0}, changes, {A: 0}, now=20.0, grace=10.0)
        assert held.changes == ()  # nothing goes out yet
        assert held.current == {A: 100, B: 0}  # both keep their known height
        assert held.losing == {first: 12.0, then: 20.0}
        assert held.recheck == 22.0


def test_of_three_held_losses_the_recheck_is_the_earliest_due() -> None:
    known = {A: 7, B: 0, C: 0}
    changes = [TxChange(A, "unconfirmed", 0, 0), TxChange(B, "dropped", 0, 0),
               TxChange(C, "dropped", 0, 0)]
    for order in ((A, B, C), (B, C, A), (C, A, B)):
        losing = dict(zip(order, (3.0, 4.0, 5.0), strict=True))
        held = hold_losses(known, losing, changes, {A: 0}, now=6.0, grace=2.5)
        # Ages 3, 2 and 1 s: the oldest is out (3 >= 2.5), the others due at 6.5 and 7.5.
        assert [c.txid for c in held.changes] == [order[0]]
        assert held.recheck == 4.0 + 2.5
