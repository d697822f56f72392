"""The producers' way into the batcher, and a way to wait until events are stored.

``BatcherSink.emit`` queues events on the batcher's bounded input (waiting while it is
full). ``BatcherSink.emit_committed`` also waits until every one of them is in a committed
batch: a producer that records its own progress (the address producer's known
transactions) does so only after that, so a crash never loses an event it counted as sent.
The batcher reports committed batches through ``CommitTracker.publish``, one of its sinks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from batcher.events import Batch, Event
from batcher.runner import BatchRunner, BatchSink

__all__ = ["BatcherSink", "CommitTracker", "CommittedOnly", "TeeSink"]

logger = logging.getLogger(__name__)


class CommitTracker:
    """A ``BatchSink`` that wakes whoever waits for the events of a published batch."""

    def __init__(self) -> None:
        self._waiting: dict[str, anyio.Event] = {}

    def publish(self, batch: Batch) -> None:
        if not self._waiting:
            return
        for event in batch.events:
            done = self._waiting.pop(event.id, None)
            if done is not None:
                done.set()

    def expect(self, events: Sequence[Event]) -> list[anyio.Event]:
        """Register before submitting, so a quick commit is not missed."""
        waits = []
        for event in events:
            done = self._waiting[event.id] = anyio.Event()
            waits.append(done)
        return waits

    def forget(self, events: Sequence[Event]) -> None:
        for event in events:
            self._waiting.pop(event.id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)


class TeeSink:
    """Publish each batch to several sinks, in order."""

    def __init__(self, *sinks: BatchSink) -> None:
        self._sinks = sinks

    def publish(self, batch: Batch) -> None:
        for sink in self._sinks:
            try:
                sink.publish(batch)
            except Exception:  # one sink's bug must not starve the others
                logger.exception("publishing batch %d to %r failed", batch.seq, sink)


class BatcherSink:
    """``EventSink`` over a running ``BatchRunner``."""

    def __init__(self, runner: BatchRunner, commits: CommitTracker) -> None:
        self._runner = runner
        self._commits = commits

    async def emit(self, events: Sequence[Event]) -> None:
        await self._runner.submit_many(events)

    async def emit_committed(self, events: Sequence[Event]) -> None:
        waits = self._commits.expect(events)
        try:
            await self._runner.submit_many(events)
            for done in waits:
                await done.wait()
        finally:
            self._commits.forget(events)


class CommittedOnly:
    """An ``EventSink`` whose ``emit`` returns once the events are stored: for a producer
    that records its progress right after emitting (the block producer's stored tip)."""

    def __init__(self, sink: BatcherSink) -> None:
        self._sink = sink

    async def emit(self, events: Sequence[Event]) -> None:
        await self._sink.emit_committed(events)
