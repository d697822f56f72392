"""The store contract, run against both engines (SQLite and a fresh PostgreSQL database)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from batcher.events import Batch, Event
from batcher.store import BatchStore, NewBatch, open_store, redact_url
from batcher.store.postgres import PostgresStore
from batcher.store.sqlite import SQLiteStore
from tests.batcher.helpers import wire

pytestmark = pytest.mark.anyio

T0 = 1_760_000_000.0


def address_event(address: str, n: int, **extra: object) -> Event:
    data = {
        "address": address,
        "txid": f"{n:064x}",
        "height": n,
        "received_sats": n * 1000,
        "sent_sats": 0,
        "status": "confirmed",
        **extra,
    }
    return Event(type="address", key=address, data=data, ts=T0 + n + 0.0004567, id=f"a{n}")


def block_event(height: int) -> Event:
    data = {
        "height": height,
        "hash": f"{height:064x}",
        "prev_hash": f"{height - 1:064x}",
        "time": 1_760_000_000 + height,
        "bits": 0x207FFFFF,
    }
    return Event(type="block", key=str(height), data=data, ts=T0 + height, id=f"b{height}")


def large_tx(n: int, total: int) -> Event:
    data = {
        "txid": f"{n:064x}",
        "height": 0,
        "total_out_sats": total,
        "outputs": [{"address": "bcrt1qx", "value_sats": total}],
    }
    return Event(type="tx.large", key=f"{n:064x}", data=data, ts=T0 + n, id=f"t{n}")


async def test_save_assigns_increasing_gapless_seqs_in_order(store: BatchStore) -> None:
    assert await store.last_seq() == 0
    assert await store.oldest_seq() is None
    first = await store.save_batches([NewBatch("block", (block_event(1),), T0)])
    group = await store.save_batches(
        [NewBatch("address", (address_event("x", n),), T0 + n) for n in range(3)]
    )
    assert [b.seq for b in first + group] == [1, 2, 3, 4]
    assert {b.epoch for b in first + group} == {store.epoch}
    assert [b.type for b in group] == ["address"] * 3
    assert await store.last_seq() == 4
    assert await store.oldest_seq() == 1
    assert await store.save_batches([]) == []


async def test_replayed_batch_is_byte_identical_to_the_live_one(store: BatchStore) -> None:
    tricky = {
        "z_first": 1,  # key order must survive (a jsonb column would sort these)
        "a_second": "ünïcödé ✓ \u2028",
        "float": 0.1 + 0.2,
        "big": 2**62,
        "neg": -1,
        "nested": {"list": [1, 2.5, None, True, {"k": "v"}], "empty": {}},
    }
    events = (
        Event(type="fees", key="", data=tricky, ts=T0 + 0.123456789, id="e1"),
        Event(type="fees", key="", data={"x": 1}, ts=1_700_000_000, id="e2"),
    )
    (live,) = await store.save_batches([NewBatch("fees", events, T0 + 0.9999)])
    (replayed,) = await store.batches_after(0)
    assert wire(replayed) == wire(live)
    assert (
        orjson.loads(wire(replayed))["events"][0]["data"]["a_second"] == tricky["a_second"]
    )
    assert list(replayed.events[0].data) == list(tricky)
    assert replayed.seq == live.seq and replayed.epoch == live.epoch


async def test_a_large_group_commit_replays_identically(store: BatchStore) -> None:
    # 1,200 rows: PostgreSQL takes its COPY path here, SQLite its executemany.
    batches = [
        NewBatch("address", tuple(address_event(f"addr{b}", b * 10 + i) for i in range(10)), T0 + b)
        for b in range(120)
    ]
    live = await store.save_batches(batches)
    replayed: list[Batch] = []
    while len(replayed) < len(live):
        replayed += await store.batches_after(replayed[-1].seq if replayed else 0, limit=50)
    assert [wire(b) for b in replayed] == [wire(b) for b in live]
    assert [b.seq for b in live] == list(range(1, 121))


async def test_batches_after_returns_oldest_first_up_to_limit(store: BatchStore) -> None:
    await store.save_batches([NewBatch("block", (block_event(h),), T0 + h) for h in range(1, 8)])
    page = await store.batches_after(2, limit=3)
    assert [b.seq for b in page] == [3, 4, 5]
    assert [b.events[0].data["height"] for b in page] == [3, 4, 5]
    assert await store.batches_after(7) == []
    with pytest.raises(ValueError, match="limit must be >= 1"):
        await store.batches_after(0, limit=0)


async def test_saving_the_same_batch_again_does_not_write_it_twice(store: BatchStore) -> None:
    batch = NewBatch("block", (block_event(1),), T0)
    (once,) = await store.save_batches([batch])
    # Leave the store as a save that raised after the database committed would (the
    # PostgreSQL fault tests cut a real COMMIT): outcome unknown, seq not confirmed.
    store._uncertain.add(batch.batch_id)  # type: ignore[attr-defined]
    store._confirmed_seq = 0  # type: ignore[attr-defined]
    nxt = NewBatch("block", (block_event(2),), T0)
    again = await store.save_batches([batch, nxt])
    assert [b.seq for b in again] == [once.seq, once.seq + 1]
    assert [b.seq for b in await store.batches_after(0)] == [1, 2]


async def test_queries_for_the_api(store: BatchStore) -> None:
    await store.save_batches(
        [
            NewBatch("block", (block_event(100), block_event(101)), T0),
            NewBatch("address", (address_event("bc1a", 1), address_event("bc1b", 2)), T0),
            NewBatch("tx.large", (large_tx(1, 5_000_000_000), large_tx(2, 200)), T0),
            NewBatch("block", (block_event(102),), T0),
            NewBatch("address", (address_event("bc1a", 3),), T0),
        ]
    )
    assert [e.data["height"] for e in await store.recent_blocks(limit=2)] == [102, 101]
    assert [e.id for e in await store.address_events("bc1a")] == ["a3", "a1"]
    assert await store.address_events("nobody") == []
    assert [e.id for e in await store.large_transactions(min_sats=1_000_000)] == ["t1"]
    assert [e.id for e in await store.large_transactions()] == ["t2", "t1"]
    (latest,) = await store.recent_blocks(limit=1)
    assert latest == block_event(102)


async def test_producer_state_watch_list_known_txs_and_tip(store: BatchStore) -> None:
    assert await store.watch_list() == []
    assert await store.watch_add(["bc1b", "bc1a", "bc1b"]) == ["bc1b", "bc1a"]
    assert await store.watch_add(["bc1a", "bc1c"]) == ["bc1c"]
    assert await store.watch_list() == ["bc1b", "bc1a", "bc1c"]
    await store.set_known_txs("bc1a", {"aa": 0, "bb": 812_000})
    assert await store.known_txs("bc1a") == {"aa": 0, "bb": 812_000}
    await store.set_known_txs("bc1a", {"bb": 812_001})
    assert await store.known_txs("bc1a") == {"bb": 812_001}
    assert await store.watch_remove("bc1a") is True
    assert await store.watch_remove("bc1a") is False
    assert await store.known_txs("bc1a") == {}
    assert await store.watch_list() == ["bc1b", "bc1c"]
    assert await store.get_tip() is None
    await store.set_tip(812_345, "00" * 32)
    assert await store.get_tip() == (812_345, "00" * 32)


async def test_prune_removes_old_batches_and_keeps_last_seq(store: BatchStore) -> None:
    await store.save_batches(
        [NewBatch("block", (block_event(h),), T0 + h * 3600) for h in range(1, 6)]
    )
    assert await store.prune(T0 + 3 * 3600 + 1) == 3
    assert await store.oldest_seq() == 4
    assert [b.seq for b in await store.batches_after(0)] == [4, 5]
    assert [e.data["height"] for e in await store.recent_blocks()] == [5, 4]
    assert await store.prune(T0) == 0
    assert await store.prune(T0 + 10**6) == 2
    assert await store.oldest_seq() is None
    assert await store.last_seq() == 5
    (nxt,) = await store.save_batches([NewBatch("block", (block_event(6),), T0)])
    assert nxt.seq == 6


async def test_state_survives_reopening_and_reset_starts_a_new_epoch(store_url: str) -> None:
    async with open_store(store_url) as store:
        epoch = store.epoch
        await store.save_batches([NewBatch("block", (block_event(1),), T0)])
        await store.watch_add(["bc1a"])
        await store.set_tip(1, "ab" * 32)
    async with open_store(store_url) as store:
        assert store.epoch == epoch
        assert await store.last_seq() == 1
        assert await store.watch_list() == ["bc1a"]
        assert await store.get_tip() == (1, "ab" * 32)
        await store.reset()
        assert store.epoch != epoch
        assert await store.batches_after(0) == []
        assert await store.watch_list() == ["bc1a"]
        # Seqs go on rising: an old client position is never inside the new history.
        (b,) = await store.save_batches([NewBatch("block", (block_event(2),), T0)])
        assert (b.seq, b.epoch) == (2, store.epoch)
    async with open_store(store_url) as store:
        assert store.epoch != epoch


async def test_ping_answers_when_open_and_misuse_is_explained(store_url: str) -> None:
    store = open_store(store_url)
    with pytest.raises(RuntimeError, match="the store is not open"):
        await store.ping()
    async with store:
        await store.ping()
        with pytest.raises(RuntimeError, match="already open"):
            await store.open()
    await store.close()  # idempotent


def test_open_store_picks_the_engine_from_the_url(tmp_path: Path) -> None:
    relative = open_store("sqlite:///chainwire.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.url == "sqlite:///chainwire.db"
    absolute = open_store(f"sqlite:///{tmp_path}/x.db")
    assert absolute.url == f"sqlite:///{tmp_path}/x.db" and os.path.isabs(str(tmp_path))
    pg = open_store("postgresql://me:s3cret@db.example:5433/chain")
    assert isinstance(pg, PostgresStore)
    assert "s3cret" not in pg.url and "s3cret" not in repr(pg)
    assert isinstance(open_store("postgres://db/chain"), PostgresStore)
    with pytest.raises(ValueError, match=r"unsupported database URL 'mysql://u@h/db'"):
        open_store("mysql://u:pw@h/db")
    with pytest.raises(ValueError, match="names no file"):
        open_store("sqlite:///")
    assert redact_url("postgresql://u:p%40ss@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///rel.db") as store:
        await store.save_batches([NewBatch("block", (block_event(1),), T0)])
    assert (tmp_path / "rel.db").exists()


async def test_sqlite_in_a_missing_directory_fails_clearly(tmp_path: Path) -> None:
    from batcher.store import StoreError

    with pytest.raises(StoreError, match="does not exist"):
        async with open_store(f"sqlite:///{tmp_path}/nope/x.db"):
            pass
