"""Header and scripthash subscriptions, spread over servers and moved when one goes.

What a producer sees
--------------------
``async with pool.subscribe_headers(servers=2) as headers`` listens to the tip on (at
least) two servers. ``headers.current`` holds each server's latest ``HeaderNotification``;
iterating yields:

* ``HeaderNotification(server, height, header)`` -- a server reported a new tip (every
  server reports each block, so expect one per server: the first wins, after checks);
* ``HeadersMoved(old_server, new_server, height, header)`` -- a server went away (or fell
  behind) and ``new_server`` replaced it; ``height``/``header`` is its current tip;
* ``Overflowed(dropped)`` -- the buffer was full and notifications were dropped.

``async with pool.subscribe_scripthashes() as subs`` then ``statuses = await
subs.add(scripthashes)`` (or ``add_addresses``) subscribes each scripthash on one server
(spread over the servers) and returns ``{scripthash: status}`` (``None``: no history).
Iterating yields:

* ``StatusNotification(server, scripthash, status)`` -- the status changed: fetch the
  history and diff;
* ``Moved(old_server, new_server, statuses)`` -- these scripthashes were re-subscribed on
  ``new_server`` because ``old_server`` went away or fell behind; ``statuses`` are the
  statuses there. Compare them with the last ones seen and reconcile those that differ
  (a change may have happened while nobody listened);
* ``Overflowed(dropped)`` -- notifications were dropped: reconcile every scripthash.

Notifications are buffered (``notification_buffer`` per subscription, never blocking the
connection); ``Overflowed`` comes once the buffer has been drained, so reconciling then
covers everything that was dropped.

Inside the pool
---------------
``Subscriptions`` is the registry; it sees the pool only as a ``PoolHost`` (``host.py``)
and owns the rules about subscriptions: the lag rule (a server more than ``max_lag_blocks``
behind the majority carries none) and ``candidates`` (usable, not lagging, fewest
subscriptions first), which it hands to ``PoolHost.acquire`` when it must wait for a
server. ``placement.py`` subscribes scripthashes on servers; ``notes.py`` holds the types.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from types import TracebackType
from typing import Any

import anyio

from .errors import ElectrumError, NoServerAvailable, ServerError
from .host import PoolHost
from .notes import (
    HeaderNotification,
    HeadersMoved,
    Moved,
    NotificationBuffer,
    Overflowed,
    StatusNotification,
)
from .placement import SCRIPTHASH_SUBSCRIBE, SCRIPTHASH_UNSUBSCRIBE, place
from .policy import lagging
from .snapshot import SubscriptionFigures
from .upstream import HEADERS_METHOD, Upstream
from .validate import address_to_scripthash, validate_scripthash

__all__ = [
    "HeaderNotification",
    "HeaderSubscription",
    "HeadersMoved",
    "Moved",
    "Overflowed",
    "ScripthashSubscription",
    "StatusNotification",
    "Subscriptions",
]

logger = logging.getLogger(__name__)


class HeaderSubscription(NotificationBuffer):
    """Tip notifications from ``count`` servers (see the module docstring)."""

    def __init__(self, subs: Subscriptions, buffer: int, count: int) -> None:
        super().__init__(buffer)
        self._subs = subs
        self.count = count
        self.servers: list[Upstream] = []
        self.orphaned_from = ""
        # Latest tip per server url.
        self.current: dict[str, HeaderNotification] = {}

    async def __aenter__(self) -> HeaderSubscription:
        await self._subs.start_headers(self)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._subs.stop_headers(self)
        self.close_stream(receiver=True)


class ScripthashSubscription(NotificationBuffer):
    """Status notifications for a set of scripthashes (see the module docstring)."""

    def __init__(self, subs: Subscriptions, buffer: int) -> None:
        super().__init__(buffer)
        self._subs = subs
        self.scripthashes: set[str] = set()

    async def __aenter__(self) -> ScripthashSubscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_stream(receiver=True)
        with anyio.CancelScope(shield=True):
            await self._subs.remove(self, list(self.scripthashes))

    async def add(self, scripthashes: Iterable[str]) -> dict[str, str | None]:
        """Subscribe; returns ``{scripthash: status}``. ``ValueError`` for a malformed
        scripthash (nothing is sent), ``NoServerAvailable`` if no server takes them."""
        wanted = [validate_scripthash(sh) for sh in scripthashes]
        return await self._subs.add(self, wanted)

    async def add_addresses(self, addresses: Iterable[str]) -> dict[str, str | None]:
        """Like ``add`` for addresses of the pool's network; keyed by scripthash."""
        network = self._subs.host.config.network
        return await self.add([address_to_scripthash(a, network) for a in addresses])

    async def remove(self, scripthashes: Iterable[str]) -> None:
        await self._subs.remove(self, [validate_scripthash(sh) for sh in scripthashes])

    def carrier(self, scripthash: str) -> str | None:
        """The url of the server a scripthash is subscribed on (None while moving)."""
        upstream = self._subs.carriers.get(scripthash)
        return upstream.url if upstream is not None else None


class Subscriptions:
    """The pool's subscription registry: which server carries what, routing, the lag
    rule, moving. ``host`` is the pool, seen through ``PoolHost``."""

    def __init__(self, host: PoolHost) -> None:
        self.host = host
        self.carriers: dict[str, Upstream] = {}
        self.statuses: dict[str, str | None] = {}
        self.listeners: dict[str, set[ScripthashSubscription]] = {}
        # scripthash -> url of the server it has to move away from.
        self.orphans: dict[str, str] = {}
        self.headers: set[HeaderSubscription] = set()
        self._wake = anyio.Event()
        self._lagging: set[Upstream] = set()

    # -- routing (synchronous: called from the connection in arrival order) ----------
    def on_notification(self, upstream: Upstream, method: str, args: Sequence[Any]) -> None:
        if method == HEADERS_METHOD:
            note = HeaderNotification(upstream.url, upstream.tip_height or 0, upstream.tip_header)
            for hsub in self.headers:
                if upstream in hsub.servers:
                    hsub.current[upstream.url] = note
                    hsub.deliver(note)
            self._check_lag()
        elif method == SCRIPTHASH_SUBSCRIBE and len(args) == 2:
            scripthash, status = args
            if self.carriers.get(scripthash) is not upstream:
                return  # a stale subscription on a server we moved away from
            self.statuses[scripthash] = status
            status_note = StatusNotification(upstream.url, scripthash, status)
            for sub in self.listeners.get(scripthash, ()):
                sub.deliver(status_note)

    def on_lost(self, upstream: Upstream) -> None:
        self._orphan_all(upstream)

    def _orphan_all(self, upstream: Upstream) -> None:
        moved = [sh for sh, carrier in self.carriers.items() if carrier is upstream]
        for sh in moved:
            del self.carriers[sh]
            self.orphans[sh] = upstream.url
        dropped = False
        for hsub in self.headers:
            if upstream in hsub.servers:
                hsub.servers.remove(upstream)
                hsub.current.pop(upstream.url, None)
                hsub.orphaned_from = upstream.url
                dropped = True
        if moved or dropped:
            logger.info(
                "moving %d scripthash subscription(s)%s off %s",
                len(moved), " and headers" if dropped else "", upstream.url,
            )
            self.wake()

    def _check_lag(self) -> None:
        now = anyio.current_time()
        tips = {
            u: u.tip_height
            for u in self.host.active_servers() if u.usable(now) and u.tip_height is not None
        }
        behind = lagging(tips, self.host.config.max_lag_blocks)
        for upstream in behind - self._lagging:
            logger.info("%s lags the majority tip; moving its subscriptions", upstream.url)
            self._orphan_all(upstream)
        self._lagging = behind

    def is_lagging(self, upstream: Upstream) -> bool:
        """Whether the lag rule excludes ``upstream`` from subscriptions right now."""
        return upstream in self._lagging

    def wake(self) -> None:
        self._wake.set()

    def figures(self) -> SubscriptionFigures:
        return SubscriptionFigures(
            scripthashes=len(self.carriers), moving=len(self.orphans),
            header_subscriptions=len(self.headers),
        )

    # -- placement ---------------------------------------------------------------------
    def candidates(self, exclude: AbstractSet[Upstream] = frozenset()) -> list[Upstream]:
        """Usable, not lagging servers not in ``exclude``, fewest subscriptions first (the
        rule the pool applies when it waits for a server to subscribe on)."""
        now = anyio.current_time()
        excluded = set(exclude)
        ok = [
            u for u in self.host.active_servers()
            if u.usable(now) and u not in self._lagging and u not in excluded
        ]
        load = {u: 0 for u in ok}
        for carrier in self.carriers.values():
            if carrier in load:
                load[carrier] += 1
        for hsub in self.headers:
            for u in hsub.servers:
                if u in load:
                    load[u] += 1
        return sorted(ok, key=lambda u: load[u])

    async def _place(self, scripthashes: list[str]) -> dict[str, tuple[Upstream, Any]]:
        return await place(
            self.host, scripthashes, candidates=self.candidates, carriers=self.carriers,
            statuses=self.statuses,
        )

    async def add(self, sub: ScripthashSubscription, scripthashes: list[str]) -> dict[str, Any]:
        self.host.check_open()
        result: dict[str, str | None] = {}
        new = []
        for sh in dict.fromkeys(scripthashes):
            self.listeners.setdefault(sh, set()).add(sub)
            sub.scripthashes.add(sh)
            if sh in self.carriers:
                result[sh] = self.statuses.get(sh)
            elif sh not in self.orphans:
                new.append(sh)
        if new:
            self.host.grow(len(new))
            try:
                placed = await self._place(new)
            except BaseException:
                for sh in new:
                    self._forget(sub, sh)
                raise
            errors = {sh: st for sh, (_u, st) in placed.items() if isinstance(st, ServerError)}
            for sh in errors:
                self._forget(sub, sh)
            if errors:
                sh, err = next(iter(errors.items()))
                raise err
            result.update({sh: st for sh, (_u, st) in placed.items()})
        for sh in scripthashes:
            if sh not in result:  # being moved right now: the Moved event will follow
                result[sh] = self.statuses.get(sh)
        return result

    def _forget(self, sub: ScripthashSubscription, sh: str) -> None:
        sub.scripthashes.discard(sh)
        listeners = self.listeners.get(sh)
        if listeners is not None:
            listeners.discard(sub)
            if not listeners:
                del self.listeners[sh]

    async def remove(self, sub: ScripthashSubscription, scripthashes: list[str]) -> None:
        by_server: dict[Upstream, list[str]] = {}
        for sh in scripthashes:
            self._forget(sub, sh)
            if sh in self.listeners:
                continue  # another subscriber still wants it
            self.orphans.pop(sh, None)
            self.statuses.pop(sh, None)
            carrier = self.carriers.pop(sh, None)
            if carrier is not None:
                by_server.setdefault(carrier, []).append(sh)
        for upstream, shs in by_server.items():
            # Best effort: the server forgets them on disconnect anyway.
            try:
                with anyio.move_on_after(self.host.config.close_timeout):
                    await upstream.batch([(SCRIPTHASH_UNSUBSCRIBE, [sh]) for sh in shs])
            except ElectrumError:
                pass

    async def start_headers(self, sub: HeaderSubscription) -> None:
        self.host.check_open()
        await self._ensure_servers(sub.count)
        self._fill_headers(sub)
        if not sub.servers:
            raise NoServerAvailable("no server available for header subscriptions")
        # Registered only now, so the mover cannot top it up while it is being set up.
        self.headers.add(sub)

    async def _ensure_servers(self, count: int) -> None:
        """Open servers until ``count`` are active, then wait (up to connect_timeout) for
        that many to be candidates."""
        self.host.open_servers(count)
        with anyio.move_on_after(self.host.config.connect_timeout):
            while len(self.candidates()) < min(count, len(self.host.active_servers())):
                await self.host.wait_changed()

    def _fill_headers(self, sub: HeaderSubscription) -> list[Upstream]:
        added = []
        for upstream in self.candidates(frozenset(sub.servers)):
            if len(sub.servers) >= sub.count:
                break
            sub.servers.append(upstream)
            sub.current[upstream.url] = HeaderNotification(
                upstream.url, upstream.tip_height or 0, upstream.tip_header
            )
            added.append(upstream)
        return added

    def stop_headers(self, sub: HeaderSubscription) -> None:
        self.headers.discard(sub)

    # -- the mover ---------------------------------------------------------------------
    async def run_mover(self) -> None:
        """Re-home orphaned subscriptions whenever a server goes or a new one connects."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._move_once()
            except ElectrumError as exc:
                logger.warning("moving subscriptions failed, will retry: %s", exc)
                await anyio.sleep(self.host.config.backoff_base)
                self.wake()

    async def _move_once(self) -> None:
        for hsub in list(self.headers):
            if len(hsub.servers) < hsub.count:
                old = hsub.orphaned_from
                for upstream in self._fill_headers(hsub):
                    height, header = upstream.tip_height or 0, upstream.tip_header
                    if old:
                        hsub.deliver(HeadersMoved(old, upstream.url, height, header))
                        old = hsub.orphaned_from = ""
                    else:  # a top-up (too few servers at the start): just its tip
                        hsub.deliver(HeaderNotification(upstream.url, height, header))
        if not self.orphans:
            return
        batch = dict(self.orphans)
        placed = await self._place(list(batch))
        moved: dict[tuple[ScripthashSubscription, str, str], dict[str, str | None]] = {}
        for sh, (upstream, status) in placed.items():
            if self.orphans.get(sh) != batch[sh] or sh not in self.listeners:
                # Removed meanwhile: do not keep the fresh subscription around.
                if sh not in self.listeners and self.carriers.get(sh) is upstream:
                    del self.carriers[sh]
                continue
            del self.orphans[sh]
            if isinstance(status, ServerError):
                logger.warning("cannot re-subscribe %s on %s: %s", sh, upstream.url, status)
                continue
            for sub in self.listeners.get(sh, ()):
                moved.setdefault((sub, batch[sh], upstream.url), {})[sh] = status
        for (sub, old, new), statuses in moved.items():
            sub.deliver(Moved(old, new, statuses))
        if self.orphans:
            self.wake()

    def close(self) -> None:
        for hsub in list(self.headers):
            hsub.close_stream()
        for subs in list(self.listeners.values()):
            for sub in subs:
                sub.close_stream()
