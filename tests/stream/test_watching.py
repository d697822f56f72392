"""The watch path and its keeper over a scripted store: failures are contained."""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import pytest

import stream.watching
from batcher.store import StoreUnavailable, WatchPage
from stream.watching import Watching

pytestmark = pytest.mark.anyio


class Store:
    """Just the watch list, in memory; ``fail_expiring`` times ``watch_expire`` fails."""

    def __init__(self) -> None:
        self.leased: dict[str, bool] = {}
        self.fail_expiring = 0

    async def watch_add(self, addresses: Iterable[str], *, leased: bool = False,
                        max_watched: int | None = None) -> list[str]:
        added = [a for a in addresses if a not in self.leased]
        for address in addresses:
            self.leased[address] = leased and self.leased.get(address, True)
        return added

    async def watch_remove(self, address: str) -> bool:
        return self.leased.pop(address, None) is not None

    async def watch_expire(self, addresses: Iterable[str]) -> list[str]:
        if self.fail_expiring:
            self.fail_expiring -= 1
            raise StoreUnavailable("database down")
        gone = [a for a in addresses if self.leased.get(a)]
        for address in gone:
            del self.leased[address]
        return gone

    async def watch_list(self) -> list[str]:
        return list(self.leased)

    async def watch_leased(self) -> list[str]:
        return [a for a, leased in self.leased.items() if leased]

    async def watch_page(self, after: str | None, limit: int) -> WatchPage:
        return WatchPage(sorted(self.leased), len(self.leased))


class Followers:
    def __init__(self) -> None:
        self.following: set[str] = set()

    def watch(self, addresses: Iterable[str]) -> None:
        self.following.update(addresses)

    def unwatch(self, address: str) -> None:
        self.following.discard(address)


async def test_the_keeper_survives_a_store_failure_and_lets_the_lease_go_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream.watching, "RETRY_SECONDS", 0.01)
    store, followers = Store(), Followers()
    store.fail_expiring = 2
    watching = Watching(store, followers, max_watched=10, lease_seconds=0.01)
    await watching.watch_stream(["a"], hold=False)
    assert followers.following == {"a"}
    async with anyio.create_task_group() as tg:
        await tg.start(watching.run)
        with anyio.fail_after(5):
            while store.leased:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert store.fail_expiring == 0 and followers.following == set()
    assert watching.stats()["expired"] == 1


async def test_a_refused_or_failed_watch_holds_nothing() -> None:
    store, followers = Store(), Followers()
    watching = Watching(store, followers, max_watched=10, lease_seconds=60)

    async def broken(*args: object, **kwargs: object) -> list[str]:
        raise StoreUnavailable("database down")

    store.watch_add = broken  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await watching.watch_stream(["a"])
    assert watching.leases.holders("a") == 0 and followers.following == set()
