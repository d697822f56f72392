"""The address producer against the real bed: a regtest node and real ElectrumX servers.

The chain changes reach the producer the way the block producer hands them over
(``on_chain(Extended/Reorg)``), built here from the node's real headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from batcher.events import Event
from batcher.store import BatchStore, NewBatch, open_store
from stream.electrum import ServerPool
from stream.producers.address_diff import history_heights
from stream.producers.addresses import AddressProducer
from stream.producers.headers import Extended, Reorg, Tip
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode, scripthash
from tests.producers.support import chain_header

pytestmark = pytest.mark.anyio


class StoringSink:
    """Stores each emit as one batch (as the batcher would) and keeps what was emitted."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.events: list[Event] = []
        self.sentinels: set[str] = set()

    async def emit(self, events: Sequence[Event]) -> None:
        await self.emit_committed(events)

    async def emit_committed(self, events: Sequence[Event]) -> None:
        for event_type in dict.fromkeys(e.type for e in events):
            group = tuple(e for e in events if e.type == event_type)
            await self.store.save_batches([NewBatch.encoded(event_type, group, group[0].ts)])
        self.events.extend(events)

    def address(self, address: str | None = None) -> list[dict[str, Any]]:
        """The ``address`` events about ``address`` (None: about every address but the
        harness's own sentinels)."""
        return [dict(e.data) for e in self.events if e.type == "address" and (
            e.key == address if address is not None else e.key not in self.sentinels)]

    async def wait(self, predicate: Callable[[], bool], seconds: float = 15) -> None:
        try:
            with anyio.fail_after(seconds):
                while not predicate():
                    await anyio.sleep(0.02)
        except TimeoutError:
            print("\n".join(f"{e.type} {dict(e.data)}" for e in self.events))
            raise


class Harness:
    def __init__(self, node: RegtestNode, servers: Sequence[ElectrumXServer],
                 pool: ServerPool, producer: AddressProducer, sink: StoringSink,
                 store: BatchStore, watched: Sequence[str], sentinel: str) -> None:
        self.node = node
        self.servers = servers
        self.pool = pool
        self.producer = producer
        self.sink = sink
        self.store = store
        self.watched = watched
        self.sentinel = sentinel

    async def mine(self, n: int = 1) -> None:
        """Mine, and tell the producer as the block producer would."""
        start = self.node.height + 1
        await anyio.to_thread.run_sync(self.node.mine, n)
        blocks = tuple(chain_header(self.node, h) for h in range(start, self.node.height + 1))
        await self.store.set_tip(blocks[-1].height, blocks[-1].hash)
        self.producer.on_chain(Extended(blocks))

    async def settled(self) -> None:
        """Until the producer has handled everything it was told so far (chain changes,
        notifications read, timers, subscriptions) and the pool moves no subscription (a
        ``Moved`` to come): what it would emit for that is emitted by now. A notification
        still on its way from a server is invisible here: see ``quiet``."""
        await self.sink.wait(lambda: self.producer.idle
                             and self.pool.snapshot().subscriptions.moving == 0)

    async def quiet(self) -> None:
        """The check that nothing more comes (nothing is sent twice), without a guessed
        sleep. First every running server serves the histories the producer recorded for
        the watched addresses (so each has processed, and notified, all that happened to
        them); then a payment to the sentinel, made last, and its event: notifications are
        handled in order, so whatever came before it is handled by then; then settled."""
        with anyio.fail_after(15):
            while not await self._servers_serve_what_was_recorded():
                await anyio.sleep(0.05)
        seen = len(self.sink.address(self.sentinel))
        await anyio.to_thread.run_sync(self.node.pay, self.sentinel, 1_000 + seen)
        await self.sink.wait(lambda: len(self.sink.address(self.sentinel)) > seen)
        await self.settled()

    async def _servers_serve_what_was_recorded(self) -> bool:
        """Whether every running server's history of each watched address is the one
        the producer recorded."""
        for address in self.watched:
            known = await self.store.known_txs(address)
            for server in self.servers:
                if not server.is_running:
                    continue  # killed by the test
                answer = await anyio.to_thread.run_sync(
                    server.request, "blockchain.scripthash.get_history", scripthash(address))
                if history_heights(answer) != known:
                    return False
        return True


@asynccontextmanager
async def running(node: RegtestNode, servers: list[ElectrumXServer], db: Path,
                  watch: Sequence[str], **options: Any) -> AsyncIterator[Harness]:
    """The producer over the bed, watching ``watch`` and a sentinel address of its own (its
    events are not among ``sink.address()``)."""
    sentinel = await anyio.to_thread.run_sync(node.new_address)
    async with open_store(f"sqlite:///{db}") as store:
        if await store.get_tip() is None:
            await store.set_tip(node.height, node.tip_hash)
        await store.watch_add([*watch, sentinel])
        sink = StoringSink(store)
        sink.sentinels.add(sentinel)
        options.setdefault("confirmations", 3)
        options.setdefault("tip_wait", 2.0)
        async with ServerPool([s.tcp_url for s in servers], network="regtest") as pool:
            producer = AddressProducer(pool, store, sink, network="regtest", **options)
            async with anyio.create_task_group() as tg:
                await tg.start(producer.run)
                yield Harness(node, servers, pool, producer, sink, store, watch, sentinel)
                tg.cancel_scope.cancel()


@pytest.fixture
def servers(electrumx_servers: list[ElectrumXServer], wait_for_tip: Any) -> list[ElectrumXServer]:
    wait_for_tip()
    return electrumx_servers


async def test_three_payments_then_a_block_then_confirmations(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    node = regtest_node
    address = node.new_address("p2tr")
    async with running(node, servers, tmp_path / "a.db", [address]) as h:
        txids = [await anyio.to_thread.run_sync(node.pay, address, sats)
                 for sats in (10_000, 20_000, 30_000)]
        await h.sink.wait(lambda: len(h.sink.address()) >= 3)
        mempool = h.sink.address()
        assert sorted((e["txid"], e["received_sats"]) for e in mempool) == sorted(
            zip(txids, (10_000, 20_000, 30_000), strict=True))
        assert {(e["status"], e["height"], e["confirmations"], e["sent_sats"], e["address"])
                for e in mempool} == {("mempool", 0, 0, 0, address)}

        await h.mine()
        height = node.height
        await h.sink.wait(lambda: len(h.sink.address()) >= 6)
        confirmed = h.sink.address()[3:]
        assert sorted(e["txid"] for e in confirmed) == sorted(txids)
        assert {(e["status"], e["height"], e["confirmations"]) for e in confirmed} == {
            ("confirmed", height, 1)}

        await h.mine(2)  # confirmations 2 and 3 (the configured depth), per block
        await h.sink.wait(lambda: len(h.sink.address()) >= 12)
        await h.mine()  # past the depth: nothing more
        await h.quiet()
        updates = h.sink.address()[6:]
        assert len(updates) == 6
        assert sorted((e["txid"], e["confirmations"]) for e in updates) == sorted(
            (t, c) for t in txids for c in (2, 3))
        assert await h.store.known_txs(address) == dict.fromkeys(txids, height)


async def test_sent_and_received_of_a_spend_from_the_watched_address(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    node = regtest_node
    address, other = node.new_address("p2wpkh"), node.new_address("p2pkh")
    async with running(node, servers, tmp_path / "a.db", [address, other]) as h:
        funding = await anyio.to_thread.run_sync(node.pay, address, 80_000)
        await h.sink.wait(lambda: len(h.sink.address(address)) == 1)
        spend = await anyio.to_thread.run_sync(
            lambda: node.pay(other, 25_000, from_address=address))
        await h.sink.wait(lambda: len(h.sink.address(address)) == 2
                          and len(h.sink.address(other)) == 1)
        mine = {e["txid"]: e for e in h.sink.address(address)}
        assert mine[funding]["received_sats"] == 80_000 and mine[funding]["sent_sats"] == 0
        change = mine[spend]["received_sats"]
        assert mine[spend]["sent_sats"] == 80_000 and 0 < change < 80_000 - 25_000
        theirs = h.sink.address(other)[0]
        assert (theirs["txid"], theirs["received_sats"], theirs["sent_sats"]) == (
            spend, 25_000, 0)


async def test_evicted_payment_is_dropped(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    node = regtest_node
    address = node.new_address()
    async with running(node, servers, tmp_path / "a.db", [address]) as h:
        txid = await anyio.to_thread.run_sync(node.pay, address, 15_000)
        await h.sink.wait(lambda: len(h.sink.address()) == 1)
        await anyio.to_thread.run_sync(node.evict, txid)
        await h.sink.wait(lambda: len(h.sink.address()) == 2)
        dropped = h.sink.address()[1]
        assert (dropped["txid"], dropped["status"], dropped["height"],
                dropped["received_sats"]) == (txid, "dropped", 0, 15_000)
        assert await h.store.known_txs(address) == {}


async def test_one_deep_reorg_unconfirms_one_payment_and_drops_another(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    node = regtest_node
    address = node.new_address()
    async with running(node, servers, tmp_path / "a.db", [address]) as h:
        kept = await anyio.to_thread.run_sync(node.pay, address, 11_000)
        lost = await anyio.to_thread.run_sync(node.pay, address, 12_000)
        await h.sink.wait(lambda: len(h.sink.address()) == 2)
        await h.mine()
        await h.sink.wait(lambda: len(h.sink.address()) == 4)
        fork = node.height - 1
        old_tip = Tip(node.height, node.tip_hash)
        await anyio.to_thread.run_sync(lambda: node.reorg(1, drop_txids=[lost]))
        connected = tuple(chain_header(node, x) for x in range(fork + 1, node.height + 1))
        h.producer.on_chain(Reorg(fork, old_tip, Tip(node.height, node.tip_hash),
                                  (old_tip.hash,), connected))
        await h.sink.wait(lambda: len(h.sink.address()) == 6)
        after = {e["txid"]: e for e in h.sink.address()[4:]}
        assert (after[kept]["status"], after[kept]["height"]) == ("unconfirmed", 0)
        assert (after[lost]["status"], after[lost]["received_sats"]) == ("dropped", 12_000)
        await h.mine()
        await h.sink.wait(lambda: len(h.sink.address()) == 7)
        again = h.sink.address()[6]
        assert (again["txid"], again["status"], again["height"], again["confirmations"]) == (
            kept, "confirmed", node.height, 1)


async def test_restart_while_payments_arrive_emits_each_event_once(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    node = regtest_node
    address = node.new_address()
    db = tmp_path / "restart.db"
    async with running(node, servers, db, [address]) as h:
        first = [await anyio.to_thread.run_sync(node.pay, address, 5_000 + i) for i in range(2)]
        await h.sink.wait(lambda: len(h.sink.address()) == 2)
        before = h.sink.address()
    # Down: two more payments, and a block confirming all four.
    later = [await anyio.to_thread.run_sync(node.pay, address, 6_000 + i) for i in range(2)]
    await anyio.to_thread.run_sync(node.mine)
    height = node.height
    for server in servers:
        await server.wait_for_height_async(height)
    async with running(node, servers, db, [address]) as h:
        await h.sink.wait(lambda: len(h.sink.address()) == 4)
        await h.quiet()  # nothing more may come
        after = h.sink.address()
    assert [(e["txid"], e["status"]) for e in before] == [(t, "mempool") for t in first]
    # The two it never saw as mempool ones are confirmed only; all four confirm once.
    assert sorted((e["txid"], e["status"], e["height"]) for e in after) == sorted(
        (t, "confirmed", height) for t in first + later)
    async with open_store(f"sqlite:///{db}") as store:
        logged = await store.address_events(address, limit=100)
    assert len(logged) == 6


async def test_restart_after_events_stored_but_not_recorded_sends_nothing_twice(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    """A crash between storing the events and recording the known transactions."""
    node = regtest_node
    address = node.new_address()
    db = tmp_path / "crash.db"
    async with running(node, servers, db, [address]) as h:
        txid = await anyio.to_thread.run_sync(node.pay, address, 7_000)
        await h.sink.wait(lambda: len(h.sink.address()) == 1)
    async with open_store(f"sqlite:///{db}") as store:
        await store.set_known_txs(address, {})  # as if the crash came before recording
    async with running(node, servers, db, [address]) as h:
        await anyio.to_thread.run_sync(node.pay, address, 8_000)
        await h.sink.wait(lambda: len(h.sink.address()) >= 1)
        await h.quiet()
        events = h.sink.address()
        assert [e["txid"] for e in events if e["txid"] == txid] == []
        assert len(events) == 1
        assert txid in await h.store.known_txs(address)


async def test_carrier_killed_while_payments_arrive_emits_each_event_once(
    regtest_node: RegtestNode, servers: list[ElectrumXServer], tmp_path: Path
) -> None:
    node = regtest_node
    address = node.new_address()
    async with running(node, servers, tmp_path / "kill.db", [address]) as h:
        txids = [await anyio.to_thread.run_sync(node.pay, address, 3_000 + i) for i in range(2)]
        await h.sink.wait(lambda: len(h.sink.address()) == 2)
        carrier = h.producer.carrier(address)
        [victim] = [s for s in servers if s.tcp_url == carrier]
        victim.kill()
        # While the subscription moves to another server: three more payments.
        txids += [await anyio.to_thread.run_sync(node.pay, address, 4_000 + i) for i in range(3)]
        await h.sink.wait(lambda: len(h.sink.address()) == 5)
        assert h.producer.carrier(address) not in (None, carrier)
        await h.mine()
        await h.sink.wait(lambda: len(h.sink.address()) == 10)
        await h.quiet()  # nothing more may come
        events = h.sink.address()
    assert sorted((e["txid"], e["status"]) for e in events) == sorted(
        (t, s) for t in txids for s in ("mempool", "confirmed"))
