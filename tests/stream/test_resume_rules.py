"""Replay then live, driven synchronously against an in-memory source: no store, no socket,
no clock. Each test pins one rule of the hand-off (``test_resume.py`` runs the same
generator over a real SQLite store)."""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import pytest

from batcher.events import Batch, Event
from batcher.store import StoreError
from stream.fanout.filters import ClientFilter
from stream.fanout.hub import Hub, Subscriber
from stream.fanout.resume import Cursor, Gap, plan_resume, replay_then_live

EPOCH = "epoch-1"


def block(seq: int) -> Batch:
    return Batch(seq, EPOCH, "block", (Event("block", str(seq), {"height": seq}, 1.0),), 1.0)


def fee(seq: int) -> Batch:
    return Batch(seq, EPOCH, "fees", (Event("fees", "fees", {"n": seq}, 1.0),), 1.0)


class MemorySource:
    """A ``ReplaySource`` over a dict; ``prune`` drops seqs as retention would."""

    def __init__(self, batches: Iterable[Batch], *, last: int | None = None,
                 epoch: str = EPOCH) -> None:
        self.stored = {b.seq: b for b in batches}
        self.last = last if last is not None else max(self.stored, default=0)
        self.epoch = epoch
        self.pages: list[int] = []  # the ``after`` of each page asked for

    async def batches_after(self, seq: int, limit: int = 100) -> list[Batch]:
        self.pages.append(seq)
        return [self.stored[s] for s in sorted(self.stored) if s > seq][:limit]

    async def last_seq(self) -> int:
        return self.last

    async def oldest_seq(self) -> int | None:
        return min(self.stored, default=None)

    def prune(self, *seqs: int) -> None:
        for seq in seqs:
            del self.stored[seq]


class DownSource(MemorySource):
    async def last_seq(self) -> int:
        raise StoreError("the store is down")


def subscribed(hub: Hub, client_filter: ClientFilter | None = None) -> tuple[Subscriber, Cursor]:
    subscriber = hub.subscribe("ws", client_filter or ClientFilter())
    return subscriber, Cursor(hub.last_seq)


async def delivered(source: MemorySource, subscriber: Subscriber, after: int | None,
                    cursor: Cursor, until: int, **options: int) -> list[int | Gap]:
    """What a transport sends, up to seq ``until``; ``[[...], ...]`` chunks flattened."""
    seen: list[int | Gap] = []
    with anyio.fail_after(2):
        async for item in replay_then_live(source, subscriber, after, cursor, **options):
            if isinstance(item, Gap):
                seen.append(item)
                continue
            seen.extend(message.seq for message in item)
            cursor.seq = item[-1].seq
            if cursor.seq >= until:
                break
    subscriber.close()
    return seen


@pytest.mark.anyio
async def test_a_live_chunk_of_only_replayed_batches_is_skipped_and_the_stream_goes_on() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource(block(s) for s in range(1, 4))
    for seq in (2, 3, 4):  # 2 and 3 were committed before the replay read them
        hub.publish(block(seq))
    # Live chunks of 2: [2, 3] holds only replayed batches, then [4].
    seen = await delivered(source, subscriber, 0, cursor, until=4, chunk_size=2)
    assert seen == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_a_live_batch_equal_to_the_last_replayed_is_not_sent_twice() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource(block(s) for s in range(1, 4))
    for seq in (3, 4):
        hub.publish(block(seq))
    assert await delivered(source, subscriber, 0, cursor, until=4) == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_live_only_skips_what_the_client_started_after() -> None:
    hub = Hub()
    subscriber = hub.subscribe("sse", ClientFilter())
    for seq in (5, 6):
        hub.publish(block(seq))
    source = MemorySource([])
    assert await delivered(source, subscriber, None, Cursor(5), until=6) == [6]
    assert source.pages == []  # live only: the store is not read


@pytest.mark.anyio
async def test_one_batch_pruned_during_a_replay_is_announced_as_a_gap() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource(block(s) for s in range(1, 7))
    seen: list[int | Gap] = []
    with anyio.fail_after(2):
        async for item in replay_then_live(source, subscriber, 0, cursor, page_size=2):
            assert isinstance(item, list | Gap)
            if isinstance(item, Gap):
                seen.append(item)
                continue
            seen.extend(message.seq for message in item)
            cursor.seq = item[-1].seq
            if cursor.seq == 2:
                source.prune(3)  # retention takes exactly one, between two pages
            if cursor.seq == 6:
                break
    subscriber.close()
    assert seen == [1, 2, Gap(3, 3, "retention"), 4, 5, 6]
    assert source.pages == [0, 2, 5]  # pages of 2 until a short one


@pytest.mark.anyio
async def test_a_hole_inside_one_page_sends_what_came_before_it_then_the_gap() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource([block(1), block(2), block(4), block(5)])  # 3 pruned meanwhile
    items: list[list[int] | Gap] = []
    with anyio.fail_after(2):
        async for item in replay_then_live(source, subscriber, 0, cursor):
            items.append(item if isinstance(item, Gap) else [m.seq for m in item])
            if isinstance(item, list):
                cursor.seq = item[-1].seq
            if cursor.seq == 5:
                break
    subscriber.close()
    assert items == [[1, 2], Gap(3, 3, "retention"), [4, 5]]


@pytest.mark.anyio
async def test_by_default_pages_of_500_and_chunks_of_100() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource(block(s) for s in range(1, 602))
    sizes: list[int] = []
    with anyio.fail_after(5):
        async for item in replay_then_live(source, subscriber, 0, cursor):
            assert isinstance(item, list)
            sizes.append(len(item))
            cursor.seq = item[-1].seq
            if cursor.seq == 601:
                break
    subscriber.close()
    assert sizes == [100] * 6 + [1]
    assert source.pages == [0, 500]


@pytest.mark.anyio
async def test_replay_comes_in_chunks_of_at_most_chunk_size_across_pages() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource(block(s) for s in range(1, 8))
    chunks: list[list[int]] = []
    with anyio.fail_after(2):
        async for item in replay_then_live(source, subscriber, 0, cursor, page_size=5,
                                           chunk_size=2):
            assert isinstance(item, list)
            chunks.append([message.seq for message in item])
            cursor.seq = item[-1].seq
            if cursor.seq == 7:
                break
    subscriber.close()
    assert chunks == [[1, 2], [3, 4], [5], [6, 7]]  # a page's rest is not held back


@pytest.mark.anyio
async def test_the_cursor_moves_past_dropped_batches_only_when_nothing_is_unsent() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub, ClientFilter.build(types=["block"]))
    source = MemorySource([block(1), fee(2), block(3), fee(4), fee(5)])
    cursors: list[tuple[int, int]] = []  # (cursor when a chunk comes, its first seq)
    hub.publish(block(6))
    with anyio.fail_after(2):
        async for item in replay_then_live(source, subscriber, 0, cursor, chunk_size=1):
            assert isinstance(item, list)
            cursors.append((cursor.seq, item[0].seq))
            cursor.seq = item[-1].seq
            if cursor.seq == 6:
                break
    subscriber.close()
    # Before 3: past the dropped 2. Before the live 6: past the page's dropped 4 and 5.
    assert cursors == [(0, 1), (2, 3), (5, 6)]


@pytest.mark.anyio
async def test_a_resume_from_another_epoch_starts_over_with_a_gap_first() -> None:
    hub = Hub()
    subscriber, cursor = subscribed(hub)
    source = MemorySource(block(s) for s in range(5, 8))
    seen = await delivered(source, subscriber, 6, cursor, until=7)
    assert seen == [7]  # same epoch: from where the client was
    subscriber, cursor = subscribed(hub)
    other = replay_then_live(source, subscriber, 6, cursor, epoch="before-a-reset")
    with anyio.fail_after(2):
        assert await anext(other) == Gap(1, 4, "epoch")
        assert [m.seq for m in await anext(other)] == [5, 6, 7]
    await other.aclose()
    subscriber.close()


@pytest.mark.parametrize(("after", "epoch", "oldest", "last", "expected"), [
    (7, None, 5, 9, (None, 7)),  # within what is stored
    (4, None, 5, 9, (None, 4)),  # right before the oldest: nothing lost
    (3, None, 5, 9, (Gap(4, 4, "retention"), 4)),  # one pruned
    (0, None, 5, 9, (Gap(1, 4, "retention"), 4)),
    (9, None, 5, 9, (None, 9)),  # up to date
    (10, None, 5, 9, (Gap(1, 4, "epoch"), 4)),  # ahead of the store: another history
    (3, "other", 5, 9, (Gap(1, 4, "epoch"), 4)),
    (3, EPOCH, 5, 9, (Gap(4, 4, "retention"), 4)),  # its own epoch, named
    (3, "other", None, 9, (Gap(1, 9, "epoch"), 9)),  # everything pruned
    (3, "other", None, 0, (None, 0)),  # a fresh store: nothing to announce
    (3, None, None, 9, (Gap(4, 9, "retention"), 9)),
    (9, None, None, 9, (None, 9)),
    (0, "other", 1, 3, (None, 0)),  # another epoch, but nothing before our oldest
    (3, "other", 2, 9, (Gap(1, 1, "epoch"), 1)),  # ... or one batch before it
])
@pytest.mark.anyio
async def test_plan_resume(after: int, epoch: str | None, oldest: int | None, last: int,
                           expected: tuple[Gap | None, int]) -> None:
    stored = [] if oldest is None else [block(s) for s in range(oldest, last + 1)]
    source = MemorySource(stored, last=last)
    assert await plan_resume(source, after, epoch) == expected


def test_a_gap_message_names_its_range_and_reason() -> None:
    assert Gap(4, 9, "retention").to_dict() == {"from": 4, "to": 9, "reason": "retention"}
    assert Gap(1, 3, "epoch").to_dict() == {"from": 1, "to": 3, "reason": "epoch"}


@pytest.mark.anyio
async def test_a_failed_plan_leaves_the_cursor_at_the_clients_own_point() -> None:
    hub = Hub()
    hub.publish(block(50))
    subscriber, cursor = subscribed(hub)
    replay = replay_then_live(DownSource([]), subscriber, 12, cursor)
    with pytest.raises(StoreError):
        await anext(replay)
    assert cursor.seq == 12  # a transport reports this as the resume point
    subscriber.close()
