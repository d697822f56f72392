"""The address producer's exactly-once core, without sockets: what a round records, when,
and for which entry.

Each test runs the real ``AddressProducer`` over a ``ScriptedPool`` and a real SQLite
store, and acts at one await point of a round (a history batch in flight, the events
being stored, the event log being read): the interleavings the end-to-end tests can only
hope for, made certain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from batcher.events import Event
from batcher.store import BatchStore, NewBatch, ProducerState, open_store
from stream.electrum import ServerPool
from stream.producers.addresses import AddressProducer
from tests.producers.scripted import (
    ME,
    OTHER,
    HookedStore,
    ScriptedPool,
    StoringSink,
    extended,
    raw_tx,
    txid_of,
)
from tests.producers.support import wait_until

pytestmark = pytest.mark.anyio

D = "d" * 64
FUNDING = raw_tx([(D, 0)], [(ME, 80_000), (OTHER, 1_000)])
FUNDING_ID = txid_of(FUNDING)
SPEND = raw_tx([(FUNDING_ID, 0)], [(OTHER, 25_000), (ME, 50_000)])
SPEND_ID = txid_of(SPEND)
RAWS = {FUNDING_ID: FUNDING, SPEND_ID: SPEND}


def history(*txs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"tx_hash": txid, "height": height} for txid, height in txs]


@dataclass
class Run:
    producer: AddressProducer
    pool: ScriptedPool
    sink: StoringSink
    store: HookedStore
    raw: BatchStore  # the store itself (the hooks do not run on it)

    async def idle(self) -> None:
        """Until the producer has read every notification sent and handled all of it."""
        await wait_until(lambda: self.producer.idle and not self.pool.pending_notes,
                         seconds=10)

    async def rewatch(self, address: str) -> None:
        """Unwatch and watch ``address`` again, as the watch commands do."""
        self.producer.unwatch(address)
        assert await self.raw.watch_remove(address)
        assert await self.raw.watch_add([address]) == [address]
        self.producer.watch([address])


@asynccontextmanager
async def producing(db: Path, histories: dict[str, list[dict[str, Any]]],
                    watch: Sequence[str], *, known: Mapping[str, dict[str, int]] | None = None,
                    tip: int = 10, logged: Sequence[Event] = (),
                    on_bulk: Callable[[Sequence[str]], Awaitable[None]] | None = None,
                    **options: Any) -> AsyncIterator[Run]:
    """The producer restored from a store at ``tip`` watching ``watch`` (with ``known``
    transactions, and ``logged`` events stored); it subscribes (and starts its rounds)
    once ``run.pool.gate`` is set. ``on_bulk`` runs at each bulk read of the restore."""
    pool = ScriptedPool(histories, dict(RAWS))
    async with open_store(f"sqlite:///{db}") as raw:
        await raw.set_tip(tip, "ab" * 32)
        await raw.watch_add(watch)
        for address, txs in (known or {}).items():
            await raw.set_known_txs(address, txs)
        for event in logged:
            await raw.save_batches([NewBatch.encoded(event.type, (event,), event.ts)])
        store = HookedStore(raw)
        store.on_bulk = on_bulk
        sink = StoringSink(raw)
        options.setdefault("retry_delay", 0.0)
        producer = AddressProducer(cast(ServerPool, pool), cast(ProducerState, store), sink,
                                   network="regtest", **options)
        async with anyio.create_task_group() as tg:
            await tg.start(producer.run)
            yield Run(producer, pool, sink, store, raw)
            tg.cancel_scope.cancel()


# -- unwatched or re-watched while a round is in flight ----------------------------------


@pytest.mark.parametrize("rewatch", [False, True])
async def test_an_address_unwatched_while_its_history_is_read_gets_nothing_from_that_read(
    tmp_path: Path, rewatch: bool,
) -> None:
    async with producing(tmp_path / "s.db", {ME: history((FUNDING_ID, 0))}, [ME]) as run:

        async def meanwhile() -> None:
            if rewatch:
                await run.rewatch(ME)
            else:
                run.producer.unwatch(ME)
                assert await run.raw.watch_remove(ME)

        run.pool.on_histories = meanwhile
        run.pool.gate.set()
        await run.idle()
        events = run.sink.address(ME)
        known = await run.raw.known_txs(ME)
        reads = len(run.pool.asked_histories)
    if rewatch:
        # The read of the old watch is dropped; the new watch reports the history once.
        assert events == [(FUNDING_ID, "mempool", 0, 0)]
        assert run.sink.events[0].data["received_sats"] == 80_000
        assert known == {FUNDING_ID: 0} and reads == 2
    else:
        assert events == [] and known == {} and reads == 1
        assert run.pool.removed == [run.pool.scripthash(ME)]


async def test_an_address_rewatched_while_its_events_are_stored_records_nothing_for_the_new_watch(
    tmp_path: Path,
) -> None:
    """The stored round counts for the entry it read, not for its re-watched successor."""
    known_at_emit: list[dict[str, int]] = []
    async with producing(tmp_path / "s.db", {ME: history((FUNDING_ID, 0))}, [ME]) as run:

        async def before(emit: int) -> None:
            known_at_emit.append(await run.raw.known_txs(ME))
            if emit == 1:
                await run.rewatch(ME)

        run.sink.before = before
        run.pool.gate.set()
        await run.idle()
        # The old watch's events were on their way; the new watch reports its own.
        assert run.sink.address(ME) == [(FUNDING_ID, "mempool", 0, 0)] * 2
        assert known_at_emit == [{}, {}]  # the old round recorded nothing for the new watch
        assert await run.raw.known_txs(ME) == {FUNDING_ID: 0}


async def test_an_address_rewatched_while_a_tip_moving_round_reads_the_log_waits_for_its_own(
    tmp_path: Path,
) -> None:
    """The tip moved: every watched address gets its confirmation updates; one re-watched
    mid-round gets none from this round (the old watch's heights are not the new one's),
    only its own first report."""
    histories = {ME: history((FUNDING_ID, 9)), OTHER: history((FUNDING_ID, 9))}
    async with producing(tmp_path / "s.db", histories, [ME, OTHER],
                         known={ME: {FUNDING_ID: 9}}) as run:

        async def on_log(address: str) -> None:
            # OTHER's first change is checked against the log (after a restart): ME's
            # history is read by now.
            if address == OTHER and run.store.on_log is not None:
                run.store.on_log = None
                assert run.pool.asked_histories == [[ME, OTHER]]
                await run.rewatch(ME)

        run.store.on_log = on_log
        run.producer.on_chain(extended(11))
        run.pool.gate.set()
        await run.idle()
        assert run.sink.address(OTHER) == [(FUNDING_ID, "confirmed", 9, 3)]
        assert run.sink.address(ME) == [(FUNDING_ID, "confirmed", 9, 3)]  # once: its own
        assert len(run.pool.asked_histories) == 2
        assert await run.raw.known_txs(ME) == {FUNDING_ID: 9}


@pytest.mark.parametrize("unwatch", [False, True])
async def test_after_a_crash_a_logged_confirmation_counts_as_sent_and_the_next_follows(
    tmp_path: Path, unwatch: bool,
) -> None:
    """Stored before a crash but not recorded: ``confirmed`` with 2 confirmations at tip
    10; the block producer has stored tip 11 since. The log check takes the 2 as sent, so
    the round sends just the 3rd, unless the address is unwatched during that check."""
    logged = Event("address", ME, {"address": ME, "txid": FUNDING_ID, "height": 9,
                                   "status": "confirmed", "received_sats": 80_000,
                                   "sent_sats": 0, "confirmations": 2}, 1.0)
    async with producing(tmp_path / "s.db", {ME: history((FUNDING_ID, 9))}, [ME], tip=11,
                         known={ME: {FUNDING_ID: 0}}, logged=[logged]) as run:

        async def on_log(address: str) -> None:
            if unwatch:
                run.producer.unwatch(address)

        run.store.on_log = on_log
        run.pool.gate.set()
        await run.idle()
        events = run.sink.address(ME)
    assert events == ([] if unwatch else [(FUNDING_ID, "confirmed", 9, 3)])


# -- confirmations come with the tip, not with a history ---------------------------------


async def test_a_tip_move_updates_confirmations_of_addresses_that_are_not_dirty(
    tmp_path: Path,
) -> None:
    histories = {ME: history((FUNDING_ID, 9)), OTHER: history((FUNDING_ID, 9))}
    async with producing(tmp_path / "s.db", histories, [ME, OTHER], confirmations=4,
                         known={ME: {FUNDING_ID: 9}, OTHER: {FUNDING_ID: 9}}) as run:
        run.pool.gate.set()
        await run.idle()
        assert run.sink.events == []  # restored: 2 confirmations at 10, already sent
        reads = len(run.pool.asked_histories)
        for height in (11, 12, 13):  # 3, then 4 (the depth), then nothing more
            run.producer.on_chain(extended(height))
            await run.idle()
        for address in (ME, OTHER):
            assert run.sink.address(address) == [(FUNDING_ID, "confirmed", 9, 3),
                                                 (FUNDING_ID, "confirmed", 9, 4)]
        assert len(run.pool.asked_histories) == reads  # no history read for them
        assert run.sink.emits == 2
        assert {e.data["received_sats"] for e in run.sink.events if e.key == ME} == {80_000}


# -- a round that fails changes no recorded state ----------------------------------------


async def test_a_round_whose_events_are_not_stored_is_done_again_exactly_once(
    tmp_path: Path,
) -> None:
    """The sink fails: nothing of the round counts (known transactions, confirmation
    counts, reported ``tx.large``); the next round sends the same events, once."""
    histories = {ME: history((FUNDING_ID, 9), (SPEND_ID, 0))}
    state_at_emit: list[dict[str, int]] = []
    async with producing(tmp_path / "s.db", histories, [ME], known={ME: {FUNDING_ID: 9}},
                         large_tx_sats=70_000) as run:

        async def before(emit: int) -> None:
            state_at_emit.append(await run.raw.known_txs(ME))

        run.sink.before = before
        run.sink.fail = {1}
        run.producer.on_chain(extended(11))
        run.pool.gate.set()
        await run.idle()
        assert run.sink.emits == 2 and run.producer.stats()["errors"] == 1
        assert state_at_emit == [{FUNDING_ID: 9}, {FUNDING_ID: 9}]
        sent = [(SPEND_ID, "mempool", 0, 0), (FUNDING_ID, "confirmed", 9, 3)]
        assert run.sink.address(ME) == sent
        assert [e.key for e in run.sink.events if e.type == "tx.large"] == [SPEND_ID]
        spend = next(e for e in run.sink.events if e.data.get("txid") == SPEND_ID)
        assert (spend.data["received_sats"], spend.data["sent_sats"]) == (50_000, 80_000)
        assert await run.raw.known_txs(ME) == {FUNDING_ID: 9, SPEND_ID: 0}

        # What the stored round sent now counts: the next block is one more confirmation.
        reads = len(run.pool.asked_histories)
        run.producer.on_chain(extended(12))
        run.pool.notify(ME)  # and a notification (same status) reads the history again
        await run.idle()
        assert len(run.pool.asked_histories) > reads
        assert run.sink.address(ME) == [*sent, (FUNDING_ID, "confirmed", 9, 4)]
        assert [e.key for e in run.sink.events if e.type == "tx.large"] == [SPEND_ID]


async def test_a_failed_round_keeps_the_confirmation_updates_of_addresses_not_dirty(
    tmp_path: Path,
) -> None:
    async with producing(tmp_path / "s.db", {ME: history((FUNDING_ID, 9))}, [ME],
                         known={ME: {FUNDING_ID: 9}}) as run:
        run.pool.gate.set()
        await run.idle()
        run.sink.fail = {run.sink.emits + 1}
        run.producer.on_chain(extended(11))
        await run.idle()
        assert run.producer.stats()["errors"] == 1
        assert run.sink.address(ME) == [(FUNDING_ID, "confirmed", 9, 3)]


async def test_a_transaction_no_server_has_yet_makes_the_round_wait_for_its_amounts(
    tmp_path: Path,
) -> None:
    async with producing(tmp_path / "s.db", {ME: history((FUNDING_ID, 0))}, [ME]) as run:
        del run.pool.raws[FUNDING_ID]

        async def first_read() -> None:
            run.pool.on_histories = second_read

        async def second_read() -> None:
            run.pool.raws[FUNDING_ID] = FUNDING  # a server has it by the next round

        run.pool.on_histories = first_read
        run.pool.gate.set()
        await run.idle()
        assert run.producer.stats()["errors"] == 1  # the first round: Incomplete
        assert run.sink.address(ME) == [(FUNDING_ID, "mempool", 0, 0)]
        assert run.sink.events[0].data["received_sats"] == 80_000


async def test_a_transaction_no_server_ever_has_is_reported_unpriced_after_some_rounds(
    tmp_path: Path,
) -> None:
    async with producing(tmp_path / "s.db", {ME: history((FUNDING_ID, 0))}, [ME]) as run:
        del run.pool.raws[FUNDING_ID]
        run.pool.gate.set()
        await run.idle()
        errors = run.producer.stats()["errors"]
        assert errors == 4 and len(run.pool.asked_histories) == errors + 1
        assert run.sink.address(ME) == [(FUNDING_ID, "mempool", 0, 0)]
        assert run.sink.events[0].data["received_sats"] == 0
        assert await run.raw.known_txs(ME) == {FUNDING_ID: 0}
