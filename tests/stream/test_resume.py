"""Replay then live, against a real (SQLite) store: gaps are announced, never silent."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batcher.events import Event
from batcher.store import NewBatch, open_store
from stream.fanout.filters import ClientFilter
from stream.fanout.hub import Hub
from stream.fanout.resume import Cursor, Gap, replay_then_live

OLD, NEW = 1_000.0, 2_000.0


def block(height: int, ts: float) -> NewBatch:
    return NewBatch("block", (Event("block", str(height), {"height": height}, ts),), ts)


@pytest.mark.anyio
async def test_pruning_during_a_replay_yields_a_gap_not_a_silent_jump(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        await store.save_batches([block(h, OLD) for h in range(1, 21)])
        await store.save_batches([block(h, NEW) for h in range(21, 31)])
        hub = Hub()
        subscriber = hub.subscribe("ws", ClientFilter())
        cursor = Cursor(hub.last_seq)
        seen: list[int | Gap] = []
        try:
            async for item in replay_then_live(store, subscriber, 0, cursor, page_size=10):
                if isinstance(item, list):
                    seen.extend(message.seq for message in item)
                    cursor.seq = item[-1].seq
                    if cursor.seq == 10:  # retention strikes between two replay pages
                        assert await store.prune(OLD + 1) == 20
                else:
                    seen.append(item)
                if cursor.seq == 30:
                    break
        finally:
            subscriber.close()
    assert seen == [*range(1, 11), Gap(11, 20, "retention"), *range(21, 31)]


@pytest.mark.anyio
async def test_an_id_from_before_a_reset_is_behind_the_new_history(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        await store.save_batches([block(h, NEW) for h in range(1, 6)])
        await store.reset()
        await store.save_batches([block(6, NEW)])
        hub = Hub()
        subscriber = hub.subscribe("sse", ClientFilter())
        cursor = Cursor(hub.last_seq)
        seen: list[int | Gap] = []
        try:
            async for item in replay_then_live(store, subscriber, 3, cursor):
                if isinstance(item, list):
                    seen.extend(message.seq for message in item)
                    break
                seen.append(item)
        finally:
            subscriber.close()
    assert seen == [Gap(4, 5, "retention"), 6]


def fee(n: int, ts: float) -> NewBatch:
    return NewBatch("fee", (Event("fee", "fees", {"n": n}, ts),), ts)


@pytest.mark.anyio
async def test_replay_chunks_never_move_the_resume_point_past_an_unsent_batch(
    tmp_path: Path,
) -> None:
    # Blocks and fees alternate; the client wants blocks only. Chunks of 3 over pages of 7:
    # wherever the client is cut (the yield it never finished sending), the cursor must
    # name a seq from which resuming loses no block.
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        await store.save_batches([block(n, NEW) if n % 2 else fee(n, NEW) for n in range(1, 31)])
        hub = Hub()
        subscriber = hub.subscribe("ws", ClientFilter.build(types=["block"]))
        cursor = Cursor(hub.last_seq)
        sent: list[int] = []
        try:
            async for item in replay_then_live(store, subscriber, 0, cursor,
                                               page_size=7, chunk_size=3):
                assert isinstance(item, list) and 1 <= len(item) <= 3
                assert cursor.seq < item[0].seq
                unsent = [seq for seq in range(cursor.seq + 1, item[0].seq) if seq % 2]
                assert unsent == [], f"cursor {cursor.seq} skips blocks {unsent}"
                sent.extend(message.seq for message in item)
                cursor.seq = item[-1].seq
                if cursor.seq == 29:
                    break
        finally:
            subscriber.close()
    assert sent == list(range(1, 30, 2))


@pytest.mark.anyio
async def test_live_batches_already_replayed_are_not_sent_twice(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        hub = Hub()
        subscriber = hub.subscribe("ws", ClientFilter())
        cursor = Cursor(hub.last_seq)
        # Committed and published while the client was subscribing: in the store (so in
        # the replay) and in its live buffer too.
        stored = await store.save_batches([block(h, NEW) for h in range(1, 6)])
        for batch in stored[3:]:
            hub.publish(batch)
        seqs: list[int] = []
        try:
            with anyio.fail_after(5):
                async for item in replay_then_live(store, subscriber, 0, cursor):
                    assert isinstance(item, list)
                    seqs.extend(message.seq for message in item)
                    cursor.seq = item[-1].seq
                    if cursor.seq == 5:
                        [later] = await store.save_batches([block(6, NEW)])
                        hub.publish(later)
                    if cursor.seq == 6:
                        break
        finally:
            subscriber.close()
    assert seqs == [1, 2, 3, 4, 5, 6]
