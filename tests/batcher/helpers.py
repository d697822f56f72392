"""Test helpers: a recording sink, a store wrapper that injects failures, and the wire
form of a batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from batcher.events import Batch, Event
from batcher.store import BatchStore, NewBatch, StoreUnavailable
from stream.fanout.hub import Message


def wire(batch: Batch) -> bytes:
    """The batch JSON byte for byte as the server sends it: the hub's own encoding (SSE
    ``data:``; the WS ``batch`` message is the same object with ``"op"`` in front)."""
    return Message.encode(batch).payload


class RecordingSink:
    """A ``BatchSink`` that keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append(batch)

    @property
    def seqs(self) -> list[int]:
        return [b.seq for b in self.batches]

    @property
    def event_ids(self) -> list[str]:
        return [e.id for b in self.batches for e in b.events]


class FlakyStore:
    """Wraps a real store; ``save_batches`` fails while ``down`` is set, or ``fail_next``
    times; with ``commit_then_fail`` it really saves and then raises (a COMMIT whose
    acknowledgement was lost)."""

    def __init__(self, inner: BatchStore) -> None:
        self.inner = inner
        self.down = False
        self.fail_next = 0
        self.commit_then_fail = 0
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save_batches(self, batches: Sequence[NewBatch]) -> list[Batch]:
        self.calls.append(len(batches))
        if self.down:
            raise StoreUnavailable("injected: database down")
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("injected: one failure")
        if self.commit_then_fail:
            self.commit_then_fail -= 1
            # Commit for real, then leave the store as a save that raised would: it does not
            # know the outcome (test_postgres_faults cuts a real COMMIT on PostgreSQL).
            inner: Any = self.inner
            confirmed = inner._confirmed_seq
            await inner.save_batches(batches)
            inner._confirmed_seq = confirmed
            inner._uncertain.update(b.batch_id for b in batches)
            raise StoreUnavailable("injected: connection lost during COMMIT")
        return await self.inner.save_batches(batches)


def events(n: int, kind: str = "address", start: int = 0) -> list[Event]:
    return [
        Event(type=kind, key=f"bc1q{i % 7}", data={"i": i}, ts=1_760_000_000.0 + i, id=f"{kind}{i}")
        for i in range(start, start + n)
    ]


async def eventually(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Wait until ``predicate()`` is true; fail the test after ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():  # polling a condition is the point here
            await anyio.sleep(0.005)
