"""Resume: replay stored batches after a client's last seq, then hand over to live.

The order of operations is what makes the hand-off gap-free and duplicate-free: the
client is subscribed to the hub *before* the store is read. The batcher publishes a batch
only after the store committed it, so every batch is either already visible to the replay
query or arrives in the live buffer afterwards; live messages at or below the last
replayed seq are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

from batcher.events import Batch
from stream.fanout.hub import Message, Subscriber
from stream.fanout.replays import ReplayGate

__all__ = ["Cursor", "Gap", "ReplaySource", "replay_then_live"]


class ReplaySource(Protocol):
    """The part of the store that replay reads."""

    @property
    def epoch(self) -> str: ...

    async def batches_after(self, seq: int, limit: int = 100) -> list[Batch]: ...

    async def last_seq(self) -> int: ...

    async def oldest_seq(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Gap:
    """Batches ``first``..``last`` (inclusive) cannot be replayed: pruned by retention,
    or the client's position belongs to another epoch (the store was reset)."""

    first: int
    last: int
    reason: str  # "retention" or "epoch"

    def to_dict(self) -> dict[str, object]:
        return {"from": self.first, "to": self.last, "reason": self.reason}


@dataclass(slots=True)
class Cursor:
    """The client's resume point: every batch up to ``seq`` was delivered to it, or did not
    match its filter. Transports advance it after each send and report it when they cut a
    client, so resuming from it neither loses nor repeats a batch."""

    seq: int


async def plan_resume(source: ReplaySource, after: int, epoch: str | None = None
                      ) -> tuple[Gap | None, int]:
    """Where replay really starts for a client that last saw ``after``, and the gap first."""
    last = await source.last_seq()
    oldest = await source.oldest_seq()
    if (epoch is not None and epoch != source.epoch) or after > last:
        # A position from another epoch means nothing here: start over with what we have.
        start = (oldest - 1) if oldest is not None else last
        return (Gap(1, start, "epoch") if start >= 1 else None), start
    if oldest is not None and after < oldest - 1:
        return Gap(after + 1, oldest - 1, "retention"), oldest - 1
    if oldest is None and after < last:
        return Gap(after + 1, last, "retention"), last
    return None, after


async def replay_then_live(
    source: ReplaySource,
    subscriber: Subscriber,
    after: int | None,
    cursor: Cursor,
    *,
    epoch: str | None = None,
    page_size: int = 500,
    chunk_size: int = 100,
    gate: ReplayGate | None = None,
) -> AsyncGenerator[list[Message] | Gap, None]:
    """Everything ``subscriber`` should get after seq ``after`` (``None``: live only).

    ``subscriber`` must already be subscribed to the hub, and ``cursor.seq`` set to where a
    live-only client starts (the hub's last published seq). Yields a ``Gap`` first when
    part of the history is gone (also if pruning races the replay), then replayed
    messages in seq order, then live ones. Messages come in chunks (non-empty lists of at
    most ``chunk_size``, in seq order) for the transport to write at once: a client
    that fell a little behind catches up in one write. ``cursor`` advances past batches
    the filter drops; the caller advances it past what it sent.

    With a ``gate``, each page holds one of its slots from the read until the caller has
    taken the page's last chunk (close the generator, ``contextlib.aclosing``, so a
    client that leaves mid-page frees its slot at once).
    """
    if after is not None:
        cursor.seq = after  # what the client has, should planning fail (store down)
        gap, start = await plan_resume(source, after, epoch)
        cursor.seq = start
        if gap is not None:
            yield gap
        position = cursor.seq  # the last seq the replay has looked at
        while True:
            async with _slot(gate):
                page = await source.batches_after(position, page_size)
                for item in _replay_page(page, position, subscriber, cursor, chunk_size):
                    yield item
            if page:
                position = page[-1].seq
            cursor.seq = max(cursor.seq, position)
            if len(page) < page_size:
                break
    replayed_to = cursor.seq
    # Live batches at or below the last replayed seq reached the store (and the replay)
    # before this client's live buffer: skip them rather than send them twice.
    while messages := await subscriber.receive(chunk_size):
        if messages[0].seq <= replayed_to:
            messages = [m for m in messages if m.seq > replayed_to]
            if not messages:
                continue
        yield messages


def _slot(gate: ReplayGate | None) -> AbstractAsyncContextManager[None]:
    return gate if gate is not None else nullcontext()


def _replay_page(page: list[Batch], position: int, subscriber: Subscriber, cursor: Cursor,
                 chunk_size: int) -> Iterator[list[Message] | Gap]:
    """One page of stored batches after ``position`` as chunks, with a ``Gap`` wherever
    the page skips seqs. A plain generator: the cursor moves between the chunks it yields,
    exactly when the caller has sent what came before."""
    chunk: list[Message] = []
    for batch in page:
        if batch.seq > position + 1:  # pruned while we were replaying
            if chunk:
                yield chunk
                chunk = []
            yield Gap(position + 1, batch.seq - 1, "retention")
        position = batch.seq
        filtered = subscriber.filter.apply(batch)  # read each time: a filter may change
        if filtered is not None:
            chunk.append(Message.encode(filtered))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        elif not chunk:
            # Past a dropped batch only when nothing before it is still unsent:
            # the cursor must never run ahead of what the client really has.
            cursor.seq = position
    if chunk:
        yield chunk
