"""BlockProducer against the real bed: a regtest node, real ElectrumX servers, a real
SQLite store; and a lying Electrum server (scripted: no real server lies on purpose)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from batcher.events import Event
from batcher.store import BatchStore, NewBatch, open_store
from stream.electrum import ServerPool
from stream.producers.base import ChainChange
from stream.producers.blocks import BlockProducer
from stream.producers.headers import BlockHeader, Extended, Reorg, block_event_data
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.fake_electrum import FakeElectrum, grind_header

pytestmark = pytest.mark.anyio

TIMEOUT = 20.0


class CollectingSink:
    """Keeps every emitted event, and stores them (one batch per type per emit) so a
    restarted producer finds them, as it would after the batcher."""

    def __init__(self, store: BatchStore) -> None:
        self.events: list[Event] = []
        self._store = store
        self._changed = anyio.Event()

    async def emit(self, events: Sequence[Event]) -> None:
        self.events.extend(events)
        by_type: dict[str, list[Event]] = {}
        for event in events:
            by_type.setdefault(event.type, []).append(event)
        await self._store.save_batches(
            [NewBatch.encoded(t, tuple(evs), time.time()) for t, evs in by_type.items()]
        )
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]

    def heights(self) -> list[int]:
        return [e.data["height"] for e in self.of("block")]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            while not condition():
                await self._changed.wait()


class Listener:
    def __init__(self) -> None:
        self.changes: list[ChainChange] = []

    def on_chain(self, change: ChainChange) -> None:
        self.changes.append(change)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[BatchStore]:
    async with open_store(f"sqlite:///{tmp_path / 'blocks.db'}") as opened:
        yield opened


@asynccontextmanager
async def running(producer: BlockProducer) -> AsyncIterator[BlockProducer]:
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(5):  # seeding reads the store only
            await tg.start(producer.run)
        yield producer
        tg.cancel_scope.cancel()


async def handled(producer: BlockProducer, servers: Sequence[str], height: int) -> None:
    """Until every server's report of ``height`` has been handled (so a duplicate would
    have been emitted by now)."""
    with anyio.fail_after(TIMEOUT):
        while any(producer.stats()["servers"].get(s) != height for s in servers):
            await anyio.sleep(0.02)


def block_of(node: RegtestNode, height: int) -> dict[str, Any]:
    return block_event_data(height, BlockHeader.parse(node.header(height)))


async def mine(node: RegtestNode, n: int = 1) -> int:
    await anyio.to_thread.run_sync(node.mine, n)
    return node.height


async def test_one_event_per_block_from_two_servers_and_listeners_see_extended(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], store: BatchStore,
) -> None:
    urls = [s.tcp_url for s in electrumx_servers[:2]]
    start = regtest_node.height
    sink, listener = CollectingSink(store), Listener()
    async with ServerPool(urls, network="regtest") as pool:
        producer = BlockProducer(pool, store, sink, network="regtest", listeners=[listener])
        async with running(producer):
            # First start, nothing stored: the tip seen is one block event.
            await handled(producer, urls, start)
            assert [e.data for e in sink.events] == [block_of(regtest_node, start)]

            one = await mine(regtest_node)
            await handled(producer, urls, one)
            assert sink.heights() == [start, one]

            three = await mine(regtest_node, 3)
            await handled(producer, urls, three)

    assert [e.type for e in sink.events] == ["block"] * 5
    assert [e.data for e in sink.events] == [block_of(regtest_node, h)
                                             for h in range(start, three + 1)]
    assert [e.key for e in sink.events] == [str(h) for h in range(start, three + 1)]
    assert all(isinstance(c, Extended) for c in listener.changes)
    assert [b.height for c in listener.changes for b in c.blocks] == sink.heights()
    assert await store.get_tip() == (three, regtest_node.tip_hash)
    assert producer.stats()["duplicates"] >= 2  # the second server's reports


async def test_a_reorg_is_one_reorg_event_then_the_new_branch(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], store: BatchStore,
) -> None:
    urls = [s.tcp_url for s in electrumx_servers[:2]]
    sink, listener = CollectingSink(store), Listener()
    async with ServerPool(urls, network="regtest") as pool:
        producer = BlockProducer(pool, store, sink, network="regtest", listeners=[listener])
        async with running(producer):
            fork = regtest_node.height
            old = await mine(regtest_node)
            old_hash = regtest_node.tip_hash
            await handled(producer, urls, old)
            before = len(sink.events)

            new_hashes = await anyio.to_thread.run_sync(regtest_node.reorg, 1)
            new_tip = regtest_node.height
            assert new_tip == old + 1
            await handled(producer, urls, new_tip)

    after = sink.events[before:]
    assert [e.type for e in after] == ["reorg", "block", "block"]
    reorg = after[0]
    assert reorg.key == str(new_tip)
    assert reorg.data == {
        "fork_height": fork,
        "old_tip": {"height": old, "hash": old_hash},
        "new_tip": {"height": new_tip, "hash": new_hashes[-1]},
        "disconnected": [old_hash],
        "connected": new_hashes,
    }
    assert [e.data for e in after[1:]] == [block_of(regtest_node, h) for h in (old, new_tip)]
    change = listener.changes[-1]
    assert isinstance(change, Reorg)
    assert (change.fork_height, change.disconnected) == (fork, (old_hash,))
    assert await store.get_tip() == (new_tip, new_hashes[-1])


async def test_a_restart_emits_exactly_the_missed_blocks(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], store: BatchStore,
    wait_for_tip: Any,
) -> None:
    urls = [s.tcp_url for s in electrumx_servers[:2]]
    async with ServerPool(urls, network="regtest") as pool:
        first = CollectingSink(store)
        producer = BlockProducer(pool, store, first, network="regtest")
        async with running(producer):
            stopped_at = await mine(regtest_node)
            await handled(producer, urls, stopped_at)
        assert first.heights()[-1] == stopped_at

        missed = await mine(regtest_node, 3)
        await wait_for_tip.wait_async()  # the servers are past the stored tip at start

        second, listener = CollectingSink(store), Listener()
        restarted = BlockProducer(pool, store, second, network="regtest", listeners=[listener])
        async with running(restarted):
            assert restarted.tip is not None and restarted.tip.height == stopped_at
            await handled(restarted, urls, missed)

    assert [e.data for e in second.events] == [block_of(regtest_node, h)
                                               for h in range(stopped_at + 1, missed + 1)]
    assert [b.height for c in listener.changes for b in c.blocks] == second.heights()
    assert await store.get_tip() == (missed, regtest_node.tip_hash)


def _lie(fake: FakeElectrum, node: RegtestNode, kind: str) -> bytes:
    """Make ``fake`` report a bad tip; returns the bad header."""
    height = node.height
    tip = BlockHeader.parse(node.header(height))
    if kind == "unlinked":  # valid proof of work, but its parent is no block at all
        bad = grind_header("ab" * 32, time=tip.time + 1, meets_target=True)
    elif kind == "weak_pow":  # links to the tip, but its hash misses its bits' target
        bad = grind_header(tip.hash, time=tip.time + 1, meets_target=False)
    else:  # no_ancestors: claims height + 2, and has nothing at height + 1
        bad = grind_header("cd" * 32, time=tip.time + 2, meets_target=True)
        height += 1
    fake.set_header(height + 1, bad)
    fake.tip = height + 1  # what it answers to headers.subscribe
    return bad


@pytest.mark.parametrize(("kind", "reason"), [
    ("unlinked", "does not link"),
    ("weak_pow", "above the target"),
    ("no_ancestors", "has no headers"),
])
async def test_a_lying_server_is_banned_and_never_makes_an_event(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], store: BatchStore,
    kind: str, reason: str,
) -> None:
    honest = electrumx_servers[0]
    height = regtest_node.height
    # A previous run saw the node's tip (a first start would adopt whatever comes first).
    seeded = CollectingSink(store)
    await seeded.emit([Event("block", str(height), block_of(regtest_node, height), time.time())])
    await store.set_tip(height, regtest_node.tip_hash)

    sink = CollectingSink(store)
    async with FakeElectrum(regtest_node.header, tip=height) as fake:
        bad = _lie(fake, regtest_node, kind)
        async with ServerPool([honest.tcp_url, fake.url], network="regtest") as pool:
            producer = BlockProducer(pool, store, sink, network="regtest")
            async with running(producer):
                with anyio.fail_after(TIMEOUT):
                    while _state(pool, fake.url)["state"] != "banned":
                        await anyio.sleep(0.02)
                assert reason in _state(pool, fake.url)["ban_reason"]
                assert producer.stats()["bans"] == 1

                real = await mine(regtest_node)
                await handled(producer, [honest.tcp_url], real)
                assert _state(pool, fake.url)["state"] == "banned"

    bad_hash = BlockHeader.parse(bad).hash
    assert bad_hash not in {e.data["hash"] for e in sink.events}
    assert [e.data for e in sink.events] == [block_of(regtest_node, real)]


async def test_a_stored_tip_without_its_event_resumes_from_the_servers_headers(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], store: BatchStore,
    wait_for_tip: Any,
) -> None:
    # As after a store reset (batches gone, tip kept): the tip's block is fetched by height
    # and must hash to the stored tip.
    urls = [s.tcp_url for s in electrumx_servers[:2]]
    stored = regtest_node.height
    await store.set_tip(stored, regtest_node.tip_hash)
    missed = await mine(regtest_node, 2)
    await wait_for_tip.wait_async()
    sink = CollectingSink(store)
    async with ServerPool(urls, network="regtest") as pool:
        producer = BlockProducer(pool, store, sink, network="regtest")
        async with running(producer):
            assert producer.tip is None
            await handled(producer, urls, missed)
    assert sink.heights() == [stored + 1, missed]


async def test_a_gap_over_max_catch_up_starts_over_from_the_servers_tip(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], store: BatchStore,
    wait_for_tip: Any,
) -> None:
    urls = [s.tcp_url for s in electrumx_servers[:2]]
    height = regtest_node.height
    await CollectingSink(store).emit(
        [Event("block", str(height), block_of(regtest_node, height), time.time())])
    await store.set_tip(height, regtest_node.tip_hash)
    far = await mine(regtest_node, 3)
    far_block = block_of(regtest_node, far)
    await wait_for_tip.wait_async()
    sink = CollectingSink(store)
    async with ServerPool(urls, network="regtest") as pool:
        producer = BlockProducer(pool, store, sink, network="regtest", max_catch_up=2)
        async with running(producer):
            await handled(producer, urls, far)
            # The new window holds the server's recent headers: a reorg is still followed.
            await anyio.to_thread.run_sync(regtest_node.reorg, 2)
            await handled(producer, urls, regtest_node.height)
    # One event for the far tip (not for the 2 blocks before it), then the reorg.
    assert [e.type for e in sink.events] == ["block", "reorg", "block", "block", "block"]
    assert sink.events[0].data == far_block
    assert sink.events[1].data["fork_height"] == far - 2
    assert [e.data for e in sink.events[2:]] == [block_of(regtest_node, h)
                                                 for h in range(far - 1, far + 2)]
    assert await store.get_tip() == (regtest_node.height, regtest_node.tip_hash)


def _state(pool: ServerPool, url: str) -> dict[str, Any]:
    return next(s for s in pool.stats()["servers"] if s["url"] == url)
