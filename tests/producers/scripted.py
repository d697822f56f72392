"""The address producer over a scripted pool and a real SQLite store: no sockets.

``ScriptedPool`` answers what the producer asks of a ``ServerPool`` from scripts (histories
by address, raw transactions by txid) and lets a test act at a chosen point of a round:
``on_histories`` runs while a history batch is "in flight" (answered, not yet returned),
``StoringSink.before`` while a round's events are being stored, ``HookedStore.on_log``
while the event log is read. Faults are injected at those points, never by timing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from embit.networks import NETWORKS
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from batcher.events import Event
from batcher.store import BatchStore, NewBatch, StoreError
from stream.electrum.errors import ServerError
from stream.electrum.subscriptions import StatusNotification
from stream.producers.address_diff import history_status
from stream.producers.block_header import BlockHeader
from stream.producers.headers import ChainHeader, Extended
from stream.producers.txparse import parse_tx

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def regtest_address(n: int) -> str:
    return str(Script(b"\x00\x14" + bytes([n]) * 20).address(NETWORKS["regtest"]))


ME, OTHER = regtest_address(1), regtest_address(2)


def raw_tx(spends: Sequence[tuple[str, int]], pays: Sequence[tuple[str, int]]) -> str:
    """A real (unsigned) transaction spending ``spends`` and paying ``pays``."""
    tx = Transaction(
        vin=[TransactionInput(bytes.fromhex(txid), vout) for txid, vout in spends],
        vout=[TransactionOutput(value, Script(b"\x00\x14" + _program(address)))
              for address, value in pays],
    )
    return str(tx.serialize().hex())


def _program(address: str) -> bytes:
    return bytes([1 if address == ME else 2]) * 20


def txid_of(raw: str) -> str:
    return parse_tx(raw, "regtest").txid


def extended(*heights: int) -> Extended:
    """The tip moved to these heights (the address producer reads only the heights)."""
    header = BlockHeader.parse(bytes(80))
    return Extended(tuple(ChainHeader(h, header) for h in heights))


Hook = Callable[[], Awaitable[None]]


class ScriptedSubscription:
    def __init__(self, pool: ScriptedPool, notes: MemoryObjectReceiveStream[object]) -> None:
        self._pool = pool
        self._notes = notes

    async def add_addresses(self, addresses: Sequence[str]) -> dict[str, str | None]:
        self._pool.subscribed.append(list(addresses))
        return {self._pool.scripthash(a): self._pool.status(a) for a in addresses}

    async def remove(self, scripthashes: Sequence[str]) -> None:
        self._pool.removed.extend(scripthashes)

    def carrier(self, scripthash: str) -> str:
        return "tcp://scripted:1"

    def __aiter__(self) -> ScriptedSubscription:
        return self

    async def __anext__(self) -> object:
        return await self._notes.receive()


class ScriptedPool:
    """What the address producer asks of the pool, answered from scripts. Subscribing
    waits for ``gate``, so a test can act between the restore and the first round; a
    txid without a raw transaction is a ``ServerError``."""

    def __init__(self, histories: dict[str, list[dict[str, Any]]], raws: dict[str, str]
                 ) -> None:
        self.histories = histories
        self.raws = raws
        self.removed: list[str] = []
        self.asked_histories: list[list[str]] = []
        self.asked_txs: list[list[str]] = []  # each get_transactions_batch
        self.subscribed: list[list[str]] = []  # each add_addresses
        self.gate = anyio.Event()
        #: Runs (once) while a history batch is in flight: answered, not yet returned.
        self.on_histories: Hook | None = None
        self.tip: int | None = None
        self._notes: MemoryObjectSendStream[object] | None = None  # while subscribed
        self._receive: MemoryObjectReceiveStream[object] | None = None

    def scripthash(self, address: str) -> str:
        return hashlib.sha256(address.encode()).hexdigest()

    def status(self, address: str) -> str | None:
        return history_status(self.histories.get(address, []))

    @property
    def pending_notes(self) -> bool:
        """Whether a notification is sent but not yet read by the producer."""
        return self._receive is not None and (
            self._receive.statistics().current_buffer_used > 0)

    def notify(self, address: str) -> None:
        """The carrier notifies the address's status now."""
        assert self._notes is not None, "not subscribed yet"
        self._notes.send_nowait(
            StatusNotification("tcp://scripted:1", self.scripthash(address),
                               self.status(address)))

    @asynccontextmanager
    async def subscribe_scripthashes(self) -> AsyncIterator[ScriptedSubscription]:
        await self.gate.wait()
        send, receive = anyio.create_memory_object_stream[object](100)
        self._notes, self._receive = send, receive
        with send, receive:
            yield ScriptedSubscription(self, receive)

    async def get_histories_batch(self, addresses: Iterable[str]) -> list[Any]:
        wanted = list(addresses)
        self.asked_histories.append(wanted)
        answers = [list(self.histories.get(a, [])) for a in wanted]
        hook, self.on_histories = self.on_histories, None
        if hook is not None:
            await hook()
        return answers

    async def get_transactions_batch(self, txids: Iterable[str]) -> list[Any]:
        txids = list(txids)
        self.asked_txs.append(txids)
        return [self.raws.get(t, ServerError(2, "no such transaction")) for t in txids]

    def servers_tip(self) -> int | None:
        return self.tip


class StoringSink:
    """Stores each emit (as the batcher would) and keeps what was stored. ``before`` runs
    at the start of each emit, given the emit's number (1, 2, ...); emits whose number is
    in ``fail`` raise ``StoreError`` then, storing nothing."""

    def __init__(self, store: BatchStore, *, fail: Iterable[int] = ()) -> None:
        self.store = store
        self.events: list[Event] = []
        self.emits = 0
        self.fail = set(fail)
        self.before: Callable[[int], Awaitable[None]] | None = None

    async def emit(self, events: Sequence[Event]) -> None:
        await self.emit_committed(events)

    async def emit_committed(self, events: Sequence[Event]) -> None:
        self.emits += 1
        if self.before is not None:
            await self.before(self.emits)
        if self.emits in self.fail:
            raise StoreError(f"scripted failure of emit {self.emits}")
        for event_type in dict.fromkeys(e.type for e in events):
            group = tuple(e for e in events if e.type == event_type)
            await self.store.save_batches([NewBatch.encoded(event_type, group, time.time())])
        self.events.extend(events)

    def address(self, address: str | None = None) -> list[tuple[str, str, int, int]]:
        """The stored ``address`` events as (txid, status, height, confirmations)."""
        return [(e.data["txid"], e.data["status"], e.data["height"], e.data["confirmations"])
                for e in self.events
                if e.type == "address" and (address is None or e.key == address)]


class HookedStore:
    """A store whose event-log reads (``address_events``) first run ``on_log(address)``,
    and whose bulk reads of known transactions (start-up) first run ``on_bulk(addresses)``."""

    def __init__(self, store: BatchStore) -> None:
        self._store = store
        self.on_log: Callable[[str], Awaitable[None]] | None = None
        self.on_bulk: Callable[[Sequence[str]], Awaitable[None]] | None = None

    async def known_txs_many(self, addresses: Sequence[str]) -> dict[str, dict[str, int]]:
        if self.on_bulk is not None:
            await self.on_bulk(addresses)
        return await self._store.known_txs_many(addresses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def address_events(self, address: str, limit: int = 50) -> list[Event]:
        if self.on_log is not None:
            await self.on_log(address)
        return await self._store.address_events(address, limit)
