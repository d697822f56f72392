"""Closed windows waiting for the store, in the order their seqs will follow.

The aggregator appends, the writer saves from the front and pops what is stored. While the
store is failing this is the *retry buffer*; its bound is the runner's ``retry_buffer``.
The two wake-ups (work for the writer, room for the aggregator) live here, with the queue
they describe.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import anyio

from batcher.store import NewBatch

__all__ = ["PendingBatches", "Queued"]


@dataclass(slots=True)
class Queued:
    batch: NewBatch
    opened_at: float  # anyio clock: when the window's first event arrived


class PendingBatches:
    """A FIFO of ``Queued`` batches with waits for "work to do" and "room below a limit"."""

    __slots__ = ("_finished", "_items", "_room", "_work")

    def __init__(self) -> None:
        self._items: deque[Queued] = deque()
        self._finished = False
        # Made when first waited on, so the runner can be built outside an event loop.
        self._work: anyio.Event | None = None
        self._room: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Queued]:
        return iter(self._items)

    @property
    def events(self) -> int:
        """How many events the queued batches hold."""
        return sum(q.batch.count for q in self._items)

    def extend(self, queued: Iterable[Queued]) -> None:
        self._items.extend(queued)
        _set(self._work)

    def finish(self) -> None:
        """No more batches will come: ``wait_for_work`` returns False once empty."""
        self._finished = True
        _set(self._work)

    def front(self, limit: int) -> list[Queued]:
        """Up to ``limit`` batches from the front (left queued)."""
        return list(itertools.islice(self._items, limit))

    def pop_front(self, count: int) -> None:
        """Drop ``count`` batches from the front (they are stored)."""
        for _ in range(count):
            self._items.popleft()
        _set(self._room)

    def clear(self) -> None:
        self._items.clear()
        _set(self._room)

    async def wait_for_work(self) -> bool:
        """Wait until a batch is queued (True) or the queue is empty and finished (False)."""
        while not self._items:
            if self._finished:
                return False
            self._work = anyio.Event()
            await self._work.wait()
        return True

    async def wait_for_room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` batches are queued."""
        while len(self._items) >= limit:
            self._room = anyio.Event()
            await self._room.wait()


def _set(event: anyio.Event | None) -> None:
    if event is not None:
        event.set()
