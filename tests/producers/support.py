"""What the producer tests share: a sink that keeps what is emitted, condition waits, and
the bed's headers as the block producer hands them over."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from batcher.events import Event
from stream.producers.headers import BlockHeader, ChainHeader
from tests.bed.node import RegtestNode


class CollectingSink:
    """An ``EventSink`` that keeps every emitted event (the batcher has no part here)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


async def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.02)


def chain_header(node: RegtestNode, height: int) -> ChainHeader:
    """The node's header at ``height`` as the block producer passes it to listeners."""
    return ChainHeader(height, BlockHeader.parse(node.header(height)))
