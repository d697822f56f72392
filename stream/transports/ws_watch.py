"""One watchdog for every WebSocket connection, instead of two idle tasks in each.

Each connection used to run a task that slept and checked whether its sends had stalled,
and one that waited for the shutdown to say goodbye: a few kB per connection (on asyncio
with anyio every task carries its handle, cancel scope and finished-event) for tasks that
almost never do anything. ``WsWatch`` is one task for the whole server: every quarter of
``send_timeout`` it lets go of the connections whose current send has made no progress
for longer than that, and when the shutdown begins it asks each connection to say
goodbye (close 1001). A connection does the work itself, in its own task group: the
watchdog only tells it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import anyio
import anyio.abc

__all__ = ["Watched", "WsWatch"]

logger = logging.getLogger(__name__)


class Watched(Protocol):
    """What the watchdog needs of a connection (``stream.transports.ws._Connection``)."""

    #: ``time.monotonic()`` when the send in progress started; None when not sending.
    sending_since: float | None

    def let_go(self) -> None:
        """Its client stopped reading: end the connection without a close frame."""

    def say_goodbye(self) -> None:
        """The server is shutting down: close with 1001 (in the connection's own tasks)."""


class WsWatch:
    """The live WebSocket connections, watched by one task (``run``)."""

    def __init__(self, send_timeout: float, shutting_down: anyio.Event) -> None:
        if send_timeout <= 0:
            raise ValueError(f"send_timeout must be > 0, got {send_timeout}")
        self.send_timeout = send_timeout
        self._shutting_down = shutting_down
        self._live: set[Watched] = set()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, connection: Watched) -> None:
        self._live.add(connection)
        if self._shutting_down.is_set():
            connection.say_goodbye()  # came in after the goodbyes went out

    def discard(self, connection: Watched) -> None:
        self._live.discard(connection)

    def check(self, now: float) -> int:
        """Let go of the connections stalled at ``now``; returns how many."""
        stalled = [c for c in self._live if c.sending_since is not None
                   and now - c.sending_since > self.send_timeout]
        for connection in stalled:
            self._live.discard(connection)
            connection.let_go()
        return len(stalled)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch until cancelled (the server's task group, at the end of its life)."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._goodbyes)
            task_status.started()
            while True:
                # A check every quarter of the timeout costs nothing per frame, unlike a
                # deadline on each send (a timer set and cancelled 100k times a second).
                await anyio.sleep(self.send_timeout / 4)
                self.check(time.monotonic())

    async def _goodbyes(self) -> None:
        await self._shutting_down.wait()
        for connection in list(self._live):
            connection.say_goodbye()
