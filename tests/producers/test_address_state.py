"""The address producer's state and round steps, without sockets: one entry per watched
address, the grace for losses, confirmation counts, amounts, the event-log check; and the
producer itself over a scripted pool and a real SQLite store."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from batcher.events import Event
from batcher.store import NewBatch, open_store
from stream.electrum import ServerPool
from stream.electrum.errors import ServerError
from stream.producers.address_diff import TxChange
from stream.producers.address_log import LoggedEvents
from stream.producers.addresses import AddressProducer
from stream.producers.amounts import TxCache, price, sent_sats, spent_from, unpriced
from stream.producers.rounds import HistoryDiff, counts_after, hold_losses
from stream.producers.txparse import parse_tx
from stream.producers.watched import WatchedAddress, WatchedAddresses
from tests.producers.scripted import (
    ME,
    OTHER,
    A,
    B,
    C,
    D,
    ScriptedPool,
    StoringSink,
    raw_tx,
    txid_of,
)
from tests.producers.support import wait_until

# -- one entry per watched address ---------------------------------------------------------


def _used(entries: WatchedAddresses, address: str) -> WatchedAddress:
    """Watch ``address`` and give it every kind of state a producer keeps."""
    entry = entries.add(address, "sh-" + address)
    assert entry is not None
    entry.known = {A: 100, B: 0}
    entry.confirmations = {A: 2}
    entry.amounts = {A: (5, 0)}
    entry.expect("status")
    entry.stale = 3
    entry.losing = {B: 1.0}
    entry.log_checked = False
    entries.set_reorg_timer(entry, 50.0)
    entries.set_recheck(entry, 40.0)
    entries.mark_dirty([address])
    return entry


def test_unwatch_then_watch_again_starts_from_fresh_state() -> None:
    entries = WatchedAddresses()
    old = _used(entries, ME)
    assert entries.next_deadline() == 40.0 and entries.dirty_count == 1
    assert entries.remove(ME)
    assert ME not in entries and entries.by_scripthash("sh-" + ME) is None
    assert entries.dirty_count == 0 and entries.next_deadline() == math.inf
    assert entries.take_unsubscribe() == ["sh-" + ME]
    fresh = entries.add(ME, "sh-" + ME)
    assert fresh is not None and fresh is not old
    assert asdict(fresh) == asdict(WatchedAddress(ME, "sh-" + ME))  # eq=False: by field
    assert fresh.log_checked and not fresh.notified and fresh.matches("anything")
    assert not entries.is_current(old) and entries.is_current(fresh)
    assert entries.dirty_count == 0 and entries.next_deadline() == math.inf
    assert entries.to_subscribe(10) == [ME]
    assert entries.take_unsubscribe() == []  # watched again before it was unsubscribed


def test_watching_twice_keeps_the_first_entry() -> None:
    entries = WatchedAddresses()
    first = _used(entries, ME)
    assert entries.add(ME, "sh-" + ME) is None
    assert entries.get(ME) is first and len(entries) == 1


def test_dirty_addresses_are_taken_first_marked_first_served() -> None:
    entries = WatchedAddresses()
    for address in (ME, OTHER, "x"):
        entries.add(address, "sh-" + address)
    entries.mark_dirty(["x", ME, "x", "not-watched"])
    entries.mark_dirty([OTHER])
    assert [e.address for e in entries.take_dirty(2)] == ["x", ME]
    entries.mark_dirty([ME])
    assert [e.address for e in entries.take_dirty(5)] == [OTHER, ME]
    assert entries.take_dirty(5) == []


def test_timers_fire_once_due_and_mark_the_address_dirty() -> None:
    entries = WatchedAddresses()
    entry = entries.add(ME, "sh")
    assert entry is not None
    entries.set_recheck(entry, 30.0)
    entries.set_recheck(entry, 20.0)  # the earliest recheck wins
    entries.set_recheck(entry, 25.0)
    entries.set_reorg_timer(entry, 10.0)
    assert entries.next_deadline() == 10.0
    entries.expire(9.9)
    assert not entries.is_dirty(ME)
    entries.expire(10.0)
    assert entries.is_dirty(ME) and entry.reorged_until is None and entry.recheck_at == 20.0
    assert entries.next_deadline() == 20.0
    entries.take_dirty(1)
    entries.expire(21.0)
    assert entries.is_dirty(ME) and entries.next_deadline() == math.inf


def test_a_notified_status_is_what_the_next_history_must_match() -> None:
    entries = WatchedAddresses()
    entry = entries.add(ME, "sh")
    assert entry is not None
    assert entry.matches("x") and entry.matches(None)
    entry.expect(None)
    assert entry.matches(None) and not entry.matches("x")
    entry.expect("x")
    assert entry.matches("x") and not entry.matches(None)
    entries.forget_statuses()
    assert entry.matches("y")


def test_a_stale_address_is_seen_among_the_dirty_ones() -> None:
    entries = WatchedAddresses()
    entry = entries.add(ME, "sh")
    assert entry is not None
    entry.stale = 1
    assert not entries.any_stale()
    entries.mark_dirty([ME])
    assert entries.any_stale()


# -- losses wait a grace; confirmation counts ---------------------------------------------


def test_a_young_loss_is_held_back_with_its_known_height() -> None:
    known = {A: 100, B: 0}
    changes = [TxChange(A, "unconfirmed", 0, 0), TxChange(B, "dropped", 0, 0),
               TxChange(C, "mempool", 0, 0, first_seen=True)]
    held = hold_losses(known, {}, changes, {A: 0, C: 0}, now=10.0, grace=2.0)
    assert held.changes == (TxChange(C, "mempool", 0, 0, first_seen=True),)
    assert held.current == {A: 100, B: 0, C: 0}
    assert held.losing == {A: 10.0, B: 10.0}
    assert held.recheck == 12.0


def test_a_loss_still_so_after_the_grace_goes_out() -> None:
    known = {A: 100, B: 0}
    changes = [TxChange(A, "unconfirmed", 0, 0), TxChange(B, "dropped", 0, 0)]
    losing = {A: 10.0, B: 11.0}
    # At exactly 2.0 s after A was first seen lost: A goes out, B (1 s) waits.
    held = hold_losses(known, losing, changes, {A: 0}, now=12.0, grace=2.0)
    assert held.changes == (TxChange(A, "unconfirmed", 0, 0),)
    assert held.current == {A: 0, B: 0}
    assert held.losing == {A: 10.0, B: 11.0}
    assert held.recheck == 13.0


def test_a_loss_that_came_back_is_forgotten() -> None:
    held = hold_losses({A: 100}, {A: 10.0, B: 5.0}, [], {A: 100}, now=11.0, grace=2.0)
    assert held == type(held)((), {A: 100}, {}, None)


def test_counts_after_a_round() -> None:
    sent = {A: 1, B: 3}
    changes = [TxChange(A, "confirmed", 100, 2), TxChange(B, "unconfirmed", 0, 0),
               TxChange(C, "confirmed", 101, 1)]
    assert counts_after(sent, changes) == {A: 2, C: 1}
    assert sent == {A: 1, B: 3}  # not changed in place


def test_a_history_diff_grows_by_copy() -> None:
    diff = HistoryDiff({A: 0}, (TxChange(A, "mempool", 0, 0),))
    more = diff.plus([TxChange(A, "confirmed", 5, 1)])
    assert len(diff.changes) == 1 and len(more.changes) == 2 and more.current is diff.current


# -- amounts -------------------------------------------------------------------------------

FUNDING = raw_tx([(D, 0)], [(ME, 80_000), (OTHER, 1_000)])
FUNDING_ID = txid_of(FUNDING)
SPEND = raw_tx([(FUNDING_ID, 0), (FUNDING_ID, 1), (C, 3)], [(OTHER, 25_000), (ME, 50_000)])
SPEND_ID = txid_of(SPEND)


def test_sent_sats_counts_only_the_outputs_of_the_address_that_inputs_spend() -> None:
    funding, spend = parse_tx(FUNDING, "regtest"), parse_tx(SPEND, "regtest")
    prevs = {FUNDING_ID: funding}
    assert sent_sats(spend, ME, prevs) == 80_000
    assert sent_sats(spend, OTHER, prevs) == 1_000
    assert sent_sats(spend, ME, {}) == 0  # inputs not known: nothing counted
    assert sent_sats(funding, ME, prevs) == 0
    assert spend.received_by(ME) == 50_000


def test_an_input_past_the_outputs_of_its_transaction_counts_nothing() -> None:
    bogus = parse_tx(raw_tx([(FUNDING_ID, 2)], [(OTHER, 1)]), "regtest")
    assert sent_sats(bogus, ME, {FUNDING_ID: parse_tx(FUNDING, "regtest")}) == 0


def test_price_fills_the_cache_and_forgets_what_left_the_history() -> None:
    parsed = {FUNDING_ID: parse_tx(FUNDING, "regtest"), SPEND_ID: parse_tx(SPEND, "regtest")}
    amounts = {A: (1, 2), B: (3, 4), FUNDING_ID: (7, 7)}
    changes = [TxChange(SPEND_ID, "mempool", 0, 0), TxChange(B, "dropped", 0, 0),
               TxChange(FUNDING_ID, "confirmed", 5, 1)]
    price(amounts, ME, changes, {SPEND_ID: 0, FUNDING_ID: 5}, parsed)
    # SPEND priced; FUNDING kept as cached; B kept (a change of the round); A forgotten.
    assert amounts == {SPEND_ID: (50_000, 80_000), B: (3, 4), FUNDING_ID: (7, 7)}


def test_what_to_fetch_for_amounts() -> None:
    changes = [TxChange(SPEND_ID, "mempool", 0, 0), TxChange(B, "dropped", 0, 0),
               TxChange(A, "confirmed", 5, 1)]
    assert list(unpriced(changes, {A: (1, 1)})) == [SPEND_ID]
    parsed = {SPEND_ID: parse_tx(SPEND, "regtest")}
    # The spend's inputs: only FUNDING is in the address's history (C is someone else's).
    assert list(spent_from(changes, [FUNDING_ID, SPEND_ID], parsed)) == [FUNDING_ID]
    assert list(spent_from(changes, [SPEND_ID], parsed)) == []


class ScriptedTxs:
    def __init__(self, raws: dict[str, object]) -> None:
        self.raws = raws
        self.asked: list[list[str]] = []

    async def get_transactions_batch(self, txids: Iterable[str]) -> list[Any]:
        wanted = list(txids)
        self.asked.append(wanted)
        return [self.raws[t] for t in wanted]


@pytest.mark.anyio
async def test_the_transaction_cache_fetches_once_and_keeps_only_checked_answers() -> None:
    source = ScriptedTxs({FUNDING_ID: FUNDING, SPEND_ID: FUNDING,
                          A: ServerError(2, "no such transaction"), B: "not a transaction"})
    cache = TxCache(source, "regtest", size=2)
    await cache.fetch([FUNDING_ID, FUNDING_ID, SPEND_ID, A, B])
    assert source.asked == [[FUNDING_ID, SPEND_ID, A, B]]  # de-duplicated, one batch
    assert list(cache) == [FUNDING_ID]  # SPEND_ID answered with another tx: ignored
    await cache.fetch([FUNDING_ID])
    assert len(source.asked) == 1  # cached: nothing asked
    third = raw_tx([(D, 1)], [(ME, 1)])
    source.raws.update({SPEND_ID: SPEND, txid_of(third): third})
    await cache.fetch([SPEND_ID, txid_of(third)])
    assert list(cache) == [SPEND_ID, txid_of(third)]  # bounded: the oldest went


def test_the_event_log_says_what_was_sent_last() -> None:
    def event(txid: str, status: str, height: int, confirmations: int = 0) -> Event:
        return Event("address", ME, {"txid": txid, "status": status, "height": height,
                                     "confirmations": confirmations}, 0.0)

    newest_first = [event(A, "confirmed", 5, 2), event(A, "confirmed", 5, 1),
                    event(A, "mempool", 0), event(B, "mempool", 0)]
    logged = LoggedEvents.read(newest_first)
    assert logged.latest == {A: ("confirmed", 5), B: ("mempool", 0)}
    assert logged.confirmed == {A: 2}
    changes = [TxChange(A, "confirmed", 5, 3), TxChange(B, "mempool", 0, 0),
               TxChange(B, "confirmed", 6, 1), TxChange(C, "mempool", 0, 0)]
    assert logged.unsent(changes) == [TxChange(B, "confirmed", 6, 1),
                                      TxChange(C, "mempool", 0, 0)]


# -- the producer over a scripted pool -----------------------------------------------------


async def _crashed_store(db: Path) -> None:
    """As after a crash between storing FUNDING's mempool event and recording it."""
    async with open_store(f"sqlite:///{db}") as store:
        await store.set_tip(10, "ab" * 32)
        await store.watch_add([ME])
        event = Event("address", ME, {"address": ME, "txid": FUNDING_ID, "height": 0,
                                      "status": "mempool", "received_sats": 80_000,
                                      "sent_sats": 0, "confirmations": 0}, time.time())
        await store.save_batches([NewBatch.encoded("address", (event,), event.ts)])


@pytest.mark.anyio
@pytest.mark.parametrize("rewatch", [False, True])
async def test_after_a_restart_a_rewatched_address_is_not_checked_against_the_old_log(
    tmp_path: Path, rewatch: bool,
) -> None:
    db = tmp_path / "state.db"
    await _crashed_store(db)
    pool = ScriptedPool({ME: [{"tx_hash": FUNDING_ID, "height": 0}]},
                        {FUNDING_ID: FUNDING})
    async with open_store(f"sqlite:///{db}") as store:
        sink = StoringSink(store)
        producer = AddressProducer(cast(ServerPool, pool), store, sink, network="regtest")
        async with anyio.create_task_group() as tg:
            await tg.start(producer.run)  # restored; subscribing waits for the gate
            if rewatch:
                producer.unwatch(ME)
                assert await store.watch_remove(ME)
                assert await store.watch_add([ME]) == [ME]
                producer.watch([ME])
            pool.gate.set()
            await wait_until(lambda: producer.idle, seconds=10)
            tg.cancel_scope.cancel()
        events = [dict(e.data) for e in sink.events]
        assert await store.known_txs(ME) == {FUNDING_ID: 0}
    if rewatch:
        # A new watch reports the history as new, whatever an old watch stored.
        assert [(e["txid"], e["status"], e["received_sats"]) for e in events] == [
            (FUNDING_ID, "mempool", 80_000)]
    else:
        assert events == []  # already stored before the crash: not sent again
