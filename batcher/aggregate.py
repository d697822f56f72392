"""The aggregator: reads the bounded input, feeds the pure ``Windows`` core with anyio's
clock, and queues each closed window as a ``NewBatch`` for the writer.

Back-pressure is here: when ``retry_buffer`` batches are queued (the store is slow or
down), the aggregator stops reading until the writer makes room, so the input stream fills
and the producers' ``submit`` waits.
"""

from __future__ import annotations

import logging
import math
import time

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from batcher.config import BatcherConfig
from batcher.events import Event
from batcher.pending import PendingBatches, Queued
from batcher.store import NewBatch
from batcher.window import ClosedWindow, Windows

__all__ = ["Aggregator"]

# The runner's logger: this line was always "batcher.runner"'s, and log configs name it.
logger = logging.getLogger("batcher.runner")

#: At most one "queue full" warning per this many seconds.
_LOG_INTERVAL = 30.0

#: Events the aggregator takes in one go before letting other tasks run.
_BURST = 256


class Aggregator:
    """Events from ``receive`` into ``pending`` as closed windows; ``counters`` is the
    runner's. ``slowed`` is true while it waits for room in the retry buffer."""

    def __init__(
        self,
        config: BatcherConfig,
        *,
        pending: PendingBatches,
        counters: dict[str, int],
        store_url: str,
    ) -> None:
        self._buffer = config.retry_buffer
        self.windows = Windows(config.window_config())
        self._pending = pending
        self._counters = counters
        self._store_url = store_url
        self.slowed = False
        self._slowed_logged_at = -math.inf

    async def run(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        """Aggregate until the input ends; then close every window and finish the queue."""
        windows = self.windows
        clock = anyio.current_time
        while True:
            # Take what is queued without waiting, reading the clock once per burst: a burst
            # lasts about a millisecond, well inside the window's resolution.
            now = clock()
            for _ in range(_BURST):
                try:
                    event = receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                except anyio.EndOfStream:
                    self._end_of_input()
                    return
                closed = windows.add(event, now)
                if closed:
                    await self._enqueue_and_wait(closed)
            else:
                # A flood never empties the input: let the writer and others run.
                await anyio.lowlevel.checkpoint()
                continue
            # The input is empty: wait for an event or the next window deadline.
            deadline = windows.next_deadline()
            got = None
            try:
                if deadline is None:
                    got = await receive.receive()
                else:
                    with anyio.move_on_after(deadline - clock()):
                        got = await receive.receive()
            except anyio.EndOfStream:
                self._end_of_input()
                return
            if got is None:
                await self._enqueue_and_wait(windows.poll(clock()))
            else:
                closed = windows.add(got, clock())
                if closed:
                    await self._enqueue_and_wait(closed)

    def flush(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        """Shutdown: queue what is left in the input and every open window (never waits)."""
        now = anyio.current_time()
        while True:
            try:
                event = receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            self._enqueue(self.windows.add(event, now))
        self._enqueue(self.windows.drain(anyio.current_time()))

    def _end_of_input(self) -> None:
        self._enqueue(self.windows.drain(anyio.current_time()))
        self._pending.finish()

    def _enqueue(self, closed: list[ClosedWindow]) -> None:
        if not closed:
            return
        wall = time.time()
        counters = self._counters
        # Encoding here, in the aggregator, overlaps with the store's work on the group
        # before; the writer then only assembles rows.
        self._pending.extend(
            Queued(NewBatch.encoded(window.type, window.events, wall), window.opened_at)
            for window in closed
        )
        for window in closed:
            counters["batches_created"] += 1
            counters["events_batched"] += window.count
            counters[f"flushes_{window.reason}"] += 1

    async def _enqueue_and_wait(self, closed: list[ClosedWindow]) -> None:
        # Queue first, then wait: a cancelled wait must not lose the closed windows.
        self._enqueue(closed)
        if len(self._pending) < self._buffer:
            return
        if not self.slowed:
            self.slowed = True
            self._counters["backpressure_episodes"] += 1
            self._log_slowed()
        await self._pending.wait_for_room(self._buffer)
        self.slowed = False

    def _log_slowed(self) -> None:
        now = anyio.current_time()
        # Under a sustained flood the queue fills and drains many times a second: one
        # line per ``_LOG_INTERVAL`` says it without flooding the log.
        if now - self._slowed_logged_at < _LOG_INTERVAL:
            return
        self._slowed_logged_at = now
        logger.warning(
            "batch queue full (%d batches waiting for the store at %s): slowing the "
            "producers until it catches up (%d times so far)",
            len(self._pending),
            self._store_url,
            self._counters["backpressure_episodes"],
        )
