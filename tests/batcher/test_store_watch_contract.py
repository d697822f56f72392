"""The watch list's leases, cap and pages: the same contract on both engines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import asyncpg
import pytest

from batcher.store import BatchStore, WatchLimitReached, open_store
from batcher.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from batcher.store.sqlite import _META as SQLITE_META
from batcher.store.sqlite import _MIGRATIONS as SQLITE_MIGRATIONS
from tests.batcher.conftest import fresh_pg_database, pg_url_for

pytestmark = pytest.mark.anyio


async def test_leased_addresses_are_told_apart_and_an_api_watch_makes_them_permanent(
    store: BatchStore,
) -> None:
    assert await store.watch_add(["s1", "s2"], leased=True) == ["s1", "s2"]
    assert await store.watch_add(["p1"]) == ["p1"]
    assert await store.watch_leased() == ["s1", "s2"]
    # A stream asking again changes nothing; an API call for a leased one makes it permanent.
    assert await store.watch_add(["p1", "s1"], leased=True) == []
    assert await store.watch_leased() == ["s1", "s2"]
    assert await store.watch_add(["s2", "p2"]) == ["p2"]
    assert await store.watch_leased() == ["s1"]
    assert await store.watch_list() == ["s1", "s2", "p1", "p2"]


async def test_expiring_removes_only_what_is_still_leased_with_its_known_txs(
    store: BatchStore,
) -> None:
    await store.watch_add(["s1", "s2", "s3"], leased=True)
    await store.watch_add(["p1"])
    await store.watch_add(["s3"])  # made permanent before its lease ran out
    await store.set_known_txs("s1", {"aa": 0})
    assert await store.watch_expire(["s3", "s1", "p1", "nobody", "s1"]) == ["s1"]
    assert await store.known_txs("s1") == {}
    assert await store.watch_list() == ["s2", "s3", "p1"]
    assert await store.watch_expire([]) == []
    assert await store.watch_leased() == ["s2"]


async def test_the_cap_is_all_or_nothing(store: BatchStore) -> None:
    await store.watch_add(["a", "b"], max_watched=3)
    with pytest.raises(WatchLimitReached) as over:
        await store.watch_add(["c", "d"], max_watched=3)
    assert over.value.limit == 3 and "3" in str(over.value)
    with pytest.raises(WatchLimitReached):
        await store.watch_add(["c", "d"], leased=True, max_watched=3)
    assert await store.watch_list() == ["a", "b"]  # neither c nor d
    # Addresses already watched cost nothing, even at the cap; and the store still works.
    assert await store.watch_add(["c", "a"], max_watched=3) == ["c"]
    assert await store.watch_add(["a", "b", "c"], max_watched=3) == []
    with pytest.raises(WatchLimitReached):
        await store.watch_add(["e"], max_watched=3)
    assert await store.watch_add(["e"]) == ["e"]  # no cap given (CHAINWIRE_WATCH): none
    assert (await store.watch_page(None, 10)).total == 4


async def test_concurrent_adds_cannot_together_pass_the_cap(store_url: str) -> None:
    async with open_store(store_url) as one, open_store(store_url) as two:
        outcomes: list[str] = []

        async def add(store: BatchStore, addresses: list[str]) -> None:
            try:
                await store.watch_add(addresses, max_watched=3)
                outcomes.append("added")
            except WatchLimitReached:
                outcomes.append("refused")

        async with anyio.create_task_group() as tg:
            tg.start_soon(add, one, ["a1", "a2"])
            tg.start_soon(add, two, ["b1", "b2"])
        assert sorted(outcomes) == ["added", "refused"]
        assert len(await one.watch_list()) == 2


async def test_pages_walk_the_list_in_byte_order_exactly_once(store: BatchStore) -> None:
    # Mixed case (base58) and digits: byte order, whatever the database's collation.
    addresses = [f"{prefix}{n:03d}" for prefix in ("bc1q", "1A", "3b", "1a", "Bz")
                 for n in range(7)]
    await store.watch_add(addresses)
    seen: list[str] = []
    after = None
    while True:
        page = await store.watch_page(after, 4)
        assert page.total == len(addresses)
        if not page.addresses:
            break
        seen += page.addresses
        after = page.addresses[-1]
    assert seen == sorted(addresses, key=lambda a: a.encode())
    # A cursor stays valid once its address is gone.
    await store.watch_remove("1A003")
    assert (await store.watch_page("1A003", 1)).addresses == ["1A004"]
    with pytest.raises(ValueError):
        await store.watch_page(None, 0)


async def test_addresses_watched_before_leases_existed_stay_permanent(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.execute(SQLITE_META)
    for statement in SQLITE_MIGRATIONS[1].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO chainwire_meta (id, schema_version, epoch) VALUES (1, 1, 'e')")
    conn.execute("INSERT INTO chainwire_watch (address) VALUES ('old')")
    conn.commit()
    conn.close()
    async with open_store(f"sqlite:///{path}") as store:
        assert await store.watch_list() == ["old"]
        assert await store.watch_leased() == []
    async with fresh_pg_database() as name:
        pg = await asyncpg.connect(pg_url_for(name))
        try:
            await pg.execute(
                "CREATE TABLE chainwire_meta (id smallint PRIMARY KEY DEFAULT 1, "
                "schema_version integer NOT NULL, epoch text NOT NULL, last_seq bigint NOT "
                "NULL DEFAULT 0, tip_height bigint, tip_hash text)")
            await pg.execute(PG_MIGRATIONS[1])
            await pg.execute("INSERT INTO chainwire_meta (schema_version, epoch) VALUES (1, 'e')")
            await pg.execute("INSERT INTO chainwire_watch (address) VALUES ('old')")
        finally:
            await pg.close()
        async with open_store(pg_url_for(name)) as store:
            assert await store.watch_list() == ["old"]
            assert await store.watch_leased() == []
            assert await store.watch_expire(["old"]) == []
