"""All producers, wired to each other and run together.

Start order matters: the address producer reads the stored tip before the block producer
starts catching up, so confirmations counted before a restart are not counted again.
Every ``run`` reports started before touching Electrum: the server's start-up never waits
on an upstream server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from batcher.store import BatchStore
from stream.electrum import ServerPool
from stream.settings import Settings

from .addresses import AddressProducer
from .sink import BatcherSink

__all__ = ["Producers"]

logger = logging.getLogger(__name__)


class Producers:
    """Builds and runs every producer for ``settings``."""

    def __init__(self, settings: Settings, pool: ServerPool, store: BatchStore,
                 sink: BatcherSink) -> None:
        self.addresses = AddressProducer(
            pool, store, sink, network=settings.network,
            confirmations=settings.confirmations, large_tx_sats=settings.large_tx_sats,
            scan_blocks=settings.scan_blocks,
        )

    def watch(self, addresses: Iterable[str]) -> None:
        self.addresses.watch(addresses)

    def unwatch(self, address: str) -> None:
        self.addresses.unwatch(address)

    def stats(self) -> dict[str, Any]:
        return {"addresses": self.addresses.stats()}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.addresses.run)
            task_status.started()
