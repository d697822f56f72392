"""The one path that changes the watch list, and the lease keeper.

- ``watch`` (``POST /api/v1/watch``): permanent until ``DELETE``; makes leased ones permanent.
- ``watch_stream`` (SSE ``address=``, WS subscribe): new addresses are leased, and the
  subscriber holds them until it calls ``release``.
- ``unwatch`` (``DELETE``) and ``expire_due`` (a lease ran out): the store forgets the
  address, then the producers (``unwatch``): the same path for both.

Every change runs under one lock, and a stream takes its hold inside it, so a lease can
never run out between a subscriber asking for an address and holding it: the keeper sees
either no holder and lets it go first (the subscriber then watches it anew), or the hold.
The global cap is checked by the store in the same transaction as the insert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from batcher.store import StoreError, WatchList, WatchPage
from stream.leases import Leases

__all__ = ["Followers", "Watching"]

logger = logging.getLogger(__name__)

#: Leases let go per store transaction: the lock is never held for long.
EXPIRE_CHUNK = 500
#: After the store failed under the keeper.
RETRY_SECONDS = 5.0


class Followers(Protocol):
    """What follows the watch list on the chain (the address producer)."""

    def watch(self, addresses: Iterable[str]) -> None: ...

    def unwatch(self, address: str) -> None: ...


class Watching:
    """The watch list's writers, the global cap and the leases; ``clock`` is the lease
    clock (monotonic seconds), injectable so tests need not wait for a lease."""

    def __init__(self, store: WatchList, followers: Followers, *, max_watched: int,
                 lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_watched < 1:
            raise ValueError(f"max_watched must be >= 1, got {max_watched}")
        self._store = store
        self._followers = followers
        self.max_watched = max_watched
        self.leases = Leases(lease_seconds)
        self.clock = clock
        self._lock = anyio.Lock()
        self.expired = 0

    async def load(self) -> None:
        """At start: every leased address runs its lease from now (its subscribers went
        away with the previous process, and have that long to come back)."""
        self.leases.lease(await self._store.watch_leased(), self.clock())

    async def watch(self, addresses: Iterable[str]) -> list[str]:
        """Watch (canonical) ``addresses`` for good; returns the new ones. Raises
        ``WatchLimitReached`` (nothing added) past the cap."""
        wanted = list(dict.fromkeys(addresses))
        async with self._lock:
            added = await self._store.watch_add(wanted, max_watched=self.max_watched)
            self.leases.pin(wanted)
            self._followers.watch(added)
        return added

    async def watch_stream(self, addresses: Iterable[str], *, hold: bool = True) -> list[str]:
        """Watch ``addresses`` for a stream: new ones on a lease. With ``hold`` the caller
        holds each of them once and must ``release`` them; without, their leases run.
        Raises ``WatchLimitReached`` (nothing added, nothing held) past the cap."""
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return []
        async with self._lock:
            if hold:
                self.leases.hold(wanted)
            try:
                added = await self._store.watch_add(wanted, leased=True,
                                                    max_watched=self.max_watched)
            except BaseException:
                if hold:
                    self.leases.release(wanted, self.clock())
                raise
            self.leases.lease(added, self.clock())
            self._followers.watch(added)
        return added

    def release(self, addresses: Iterable[str]) -> None:
        """A stream no longer names ``addresses`` (each held once by it)."""
        self.leases.release(addresses, self.clock())

    async def unwatch(self, address: str) -> bool:
        """Stop watching ``address`` (leased or not); False if it was not watched."""
        async with self._lock:
            removed = await self._store.watch_remove(address)
            self.leases.pin([address])
            self._followers.unwatch(address)
        return removed

    async def expire_due(self) -> list[str]:
        """Unwatch every leased address whose lease ran out; returns them."""
        gone: list[str] = []
        while True:
            async with self._lock:
                due = self.leases.due(self.clock(), EXPIRE_CHUNK)
                if not due:
                    break
                # Those another node made permanent meanwhile stay watched: not ours to end.
                removed = await self._store.watch_expire(due)
                self.leases.pin(due)
                for address in removed:
                    self._followers.unwatch(address)
            gone += removed
        if gone:
            self.expired += len(gone)
            logger.info("unwatched %d leased addresses: no subscriber for %g s",
                        len(gone), self.leases.lease_seconds)
        return gone

    async def page(self, after: str | None, limit: int) -> WatchPage:
        return await self._store.watch_page(after, limit)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The lease keeper. Every lease is as long as the others and starts now, so no
        lease that starts while this sleeps can end before it wakes: sleeping until the
        next deadline, or one lease length, misses none."""
        task_status.started()
        while True:
            try:
                await self.expire_due()
            except StoreError as exc:
                # Contained: the leases stay due and are let go on a later pass.
                logger.warning("could not let leased addresses go (%s); retrying", exc)
                await anyio.sleep(RETRY_SECONDS)
                continue
            deadline = self.leases.next_deadline()
            delay = self.leases.lease_seconds if deadline is None else deadline - self.clock()
            await anyio.sleep(max(delay, 0.05))

    def stats(self) -> dict[str, Any]:
        return {**self.leases.stats(), "expired": self.expired, "max_watched": self.max_watched}
