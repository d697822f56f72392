"""Client filters, rule by rule (pure): what ``types``, ``addresses`` and ``min_sats`` keep,
at their boundaries. The contract: ``types`` selects event types; ``addresses`` narrows
``address`` events to those addresses and ``tx.large`` events to transactions touching
them; ``min_sats`` narrows ``address`` and ``tx.large`` events by value; other types pass
whole."""

from __future__ import annotations

from typing import Any

import pytest

from batcher.events import Batch, Event
from stream.fanout.filters import ClientFilter, FilterError

ALICE, BOB, CAROL = "bcrt1qalice", "bcrt1qbob", "bcrt1qcarol"


def payment(address: str, received: int = 0, sent: int = 0) -> Event:
    return Event("address", address, {"address": address, "txid": "aa" * 32, "height": 0,
                                      "status": "mempool", "received_sats": received,
                                      "sent_sats": sent, "confirmations": 0}, 1.0)


def large(total: int, *outputs: dict[str, Any]) -> Event:
    return Event("tx.large", "bb" * 32, {"txid": "bb" * 32, "height": 0,
                                         "total_out_sats": total, "outputs": list(outputs)},
                 1.0)


def out(address: str | None, value: int) -> dict[str, Any]:
    return {"address": address, "value_sats": value}


def batch(*events: Event, seq: int = 9) -> Batch:
    return Batch(seq, "epoch-1", events[0].type, events, 1.0)


def other(event_type: str) -> Batch:
    return batch(Event(event_type, "k", {"n": 1}, 1.0))


def kept(client_filter: ClientFilter, *events: Event) -> int:
    """How many of ``events`` (one batch) the filter keeps."""
    filtered = client_filter.apply(batch(*events))
    return 0 if filtered is None else filtered.count


@pytest.mark.parametrize("types", [[], [""], [" ", "  "]])
def test_an_empty_types_list_means_every_type(types: list[str]) -> None:
    everything = ClientFilter.build(types=types)
    assert everything.types is None and everything.is_everything
    for event_type in ("block", "fees", "server", "reorg"):
        whole = other(event_type)
        assert everything.apply(whole) is whole
    assert kept(everything, payment(ALICE, 1)) == 1


def test_types_are_trimmed_and_an_empty_set_after_unsubscribing_means_none() -> None:
    assert ClientFilter.build(types=[" block ", "fees"]).types == frozenset({"block", "fees"})
    nothing = ClientFilter(types=frozenset())  # a WS client that unsubscribed every type
    assert nothing.apply(other("block")) is None
    assert kept(nothing, payment(ALICE, 1)) == 0


def test_no_addresses_means_every_address_and_bad_min_sats_is_refused() -> None:
    assert ClientFilter.build(addresses=[]).addresses is None
    for bad in (-1, True, "5"):
        with pytest.raises(FilterError, match="min_sats must be a non-negative integer"):
            ClientFilter.build(min_sats=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("received", "sent"), [(5000, 0), (0, 5000), (5000, 4999)])
def test_min_sats_counts_a_payment_or_a_spend_at_its_exact_boundary(
    received: int, sent: int,
) -> None:
    event = payment(ALICE, received, sent)
    assert kept(ClientFilter.build(min_sats=5000), event) == 1
    assert kept(ClientFilter.build(min_sats=5001), event) == 0


def test_min_sats_on_a_large_transaction_is_its_total_out_at_the_boundary() -> None:
    event = large(5000, out(ALICE, 3000), out(BOB, 2000))
    assert kept(ClientFilter.build(min_sats=5000), event) == 1
    assert kept(ClientFilter.build(min_sats=5001), event) == 0


def test_addresses_narrow_large_transactions_to_those_paying_them() -> None:
    event = large(10, out(ALICE, 6), out(None, 0), out(BOB, 4))  # with an OP_RETURN
    assert kept(ClientFilter.build(addresses=[BOB]), event) == 1
    assert kept(ClientFilter.build(addresses=[CAROL, ALICE]), event) == 1
    assert kept(ClientFilter.build(addresses=[CAROL]), event) == 0
    assert kept(ClientFilter.build(addresses=[CAROL]), large(10)) == 0  # no outputs


def test_address_and_value_must_both_hold() -> None:
    rich_alice = ClientFilter.build(addresses=[ALICE], min_sats=100)
    assert kept(rich_alice, payment(ALICE, 100), payment(ALICE, 99), payment(BOB, 500)) == 1
    assert kept(rich_alice, large(100, out(ALICE, 1))) == 1
    assert kept(rich_alice, large(99, out(ALICE, 99))) == 0


def test_other_types_pass_whole_whatever_the_address_and_value() -> None:
    strict = ClientFilter.build(addresses=[ALICE], min_sats=10**15)
    for event_type in ("block", "reorg", "fees", "server"):
        whole = other(event_type)
        assert strict.apply(whole) is whole
    assert ClientFilter.build(types=["block"]).apply(other("fees")) is None


def test_a_batch_kept_whole_is_the_same_batch_and_a_narrowed_one_keeps_its_seq() -> None:
    three = batch(payment(ALICE, 1), payment(BOB, 2), payment(ALICE, 3), seq=42)
    assert ClientFilter.build(min_sats=1).apply(three) is three
    narrowed = ClientFilter.build(addresses=[ALICE]).apply(three)
    assert narrowed is not None
    assert (narrowed.seq, narrowed.epoch, narrowed.type, narrowed.count, narrowed.ts) == (
        42, "epoch-1", "address", 2, 1.0)
    assert ClientFilter.build(addresses=[CAROL]).apply(three) is None


def test_an_unknown_type_is_named_with_the_known_ones() -> None:
    with pytest.raises(FilterError) as refused:
        ClientFilter.build(types=["block", "blocks"])
    assert str(refused.value) == ("unknown event type 'blocks'; expected some of "
                                  "address, block, fees, reorg, server, tx.large")


def test_min_sats_of_one_drops_an_event_worth_nothing() -> None:
    assert kept(ClientFilter.build(min_sats=1), payment(ALICE)) == 0
    assert kept(ClientFilter.build(min_sats=1), payment(ALICE, sent=1)) == 1


def test_missing_amounts_count_as_zero_and_missing_outputs_as_none() -> None:
    def bare(event_type: str, **data: int) -> Event:
        return Event(event_type, ALICE, dict(data), 1.0)

    at_least_one = ClientFilter.build(min_sats=1)
    assert kept(at_least_one, bare("address")) == 0
    assert kept(at_least_one, bare("tx.large")) == 0
    for name in ("received_sats", "sent_sats"):
        assert kept(ClientFilter.build(min_sats=5), bare("address", **{name: 5})) == 1
        assert kept(ClientFilter.build(min_sats=6), bare("address", **{name: 5})) == 0
    assert kept(ClientFilter.build(addresses=[ALICE]), bare("tx.large", total_out_sats=9)) == 0


def test_matches_judges_one_event_on_its_own() -> None:
    blocks = ClientFilter.build(types=["block"])
    assert not blocks.matches(payment(ALICE, 10))
    alice = ClientFilter.build(addresses=[ALICE], min_sats=10**15)
    assert alice.matches(other("block").events[0])  # not narrowed: whole
    assert alice.matches(payment(ALICE, 10**15)) and not alice.matches(payment(BOB, 10**15))
