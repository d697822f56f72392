"""How many replays read the store at once.

A resume from an old seq reads and encodes pages of stored batches for that one client:
store work and memory that live clients never cost. ``ReplayGate`` lets at most
``max_concurrent`` pages be in flight: a slot is held from reading a page until the
client has taken all of it, so the memory held by replays is at most ``max_concurrent``
pages, however many clients resume. The others wait their turn, first come first served
(a waiting client holds nothing but its connection, which the connection caps bound).
A client that stops reading mid-page keeps its slot until its send timeout lets it go.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

__all__ = ["ReplayGate"]


class ReplayGate:
    """A FIFO semaphore with figures; ``async with gate:`` holds one slot.

    Not tied to a task (unlike ``anyio.CapacityLimiter``): the slot is taken inside an
    async generator, which may be finalised by another task.
    """

    def __init__(self, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._slots = anyio.Semaphore(max_concurrent)
        self.active = 0
        self.waiting = 0
        self.peak = 0
        self.pages = 0

    async def __aenter__(self) -> None:
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.pages += 1
        self.peak = max(self.peak, self.active)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.active -= 1
        self._slots.release()

    def stats(self) -> dict[str, Any]:
        return {"max": self.max_concurrent, "active": self.active, "waiting": self.waiting,
                "peak": self.peak, "pages": self.pages}
