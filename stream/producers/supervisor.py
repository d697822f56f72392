"""All producers, wired to each other and run together.

The block producer is the one source of chain truth: the address producer, the block
scanner (with ``CHAINWIRE_SCAN_BLOCKS``) and the fee producer listen to its chain changes.
Start order matters: the address producer reads the stored tip before the block producer
starts catching up, so confirmations counted before a restart are not counted again.
Every ``run`` reports started before touching Electrum: the server's start-up never waits
on an upstream server, nor on the watch list (the address producer restores it in the
background, after reading the stored tip).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from batcher.store import ProducerState
from stream.electrum import ServerPool
from stream.settings import Settings

from .addresses import AddressProducer
from .base import ChainListener
from .block_scan import BlockScanner
from .blocks import BlockProducer
from .fees import FeeProducer
from .server_events import ServerEvents
from .sink import BatcherSink, CommittedOnly

__all__ = ["Producers"]

logger = logging.getLogger(__name__)


class Producers:
    """Builds and runs every producer for ``settings``."""

    def __init__(self, settings: Settings, pool: ServerPool, store: ProducerState,
                 sink: BatcherSink) -> None:
        network = settings.network
        self.addresses = AddressProducer(
            pool, store, sink, network=network, confirmations=settings.confirmations,
            large_tx_sats=settings.large_tx_sats, scan_blocks=settings.scan_blocks,
        )
        self.fees = FeeProducer(pool, sink)
        self.scanner = (
            BlockScanner(pool, sink, network=network, threshold_sats=settings.large_tx_sats)
            if settings.scan_blocks else None
        )
        listeners: list[ChainListener] = [self.addresses, self.fees]
        if self.scanner is not None:
            listeners.append(self.scanner)
        # The stored tip must never run ahead of the stored block events.
        self.blocks = BlockProducer(pool, store, CommittedOnly(sink), network=network,
                                    listeners=listeners)
        self.servers = ServerEvents(pool, sink)

    def watch(self, addresses: Iterable[str]) -> None:
        self.addresses.watch(addresses)

    def unwatch(self, address: str) -> None:
        self.addresses.unwatch(address)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "blocks": self.blocks.stats(),
            "addresses": self.addresses.stats(),
            "fees_emitted": self.fees.emitted,
            "server_events": self.servers.emitted,
        }
        if self.scanner is not None:
            stats["block_scan"] = {"scanned": self.scanner.scanned,
                                   "emitted": self.scanner.emitted}
        return stats

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.addresses.run)  # reads the stored tip first
            await tg.start(self.blocks.run)
            await tg.start(self.fees.run)
            if self.scanner is not None:
                await tg.start(self.scanner.run)
            await tg.start(self.servers.run)
            logger.info("producers running (block scan %s)",
                        "on" if self.scanner is not None else "off")
            task_status.started()
