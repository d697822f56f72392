"""``ServerPool``: a lazy, growing, load-spreading, failing-over pool of Electrum servers.

The one entry point to the Electrum network for the rest of Chainwire. See the package
docstring for the public API and ``policy.py`` / ``batching.py`` for the pure rules it
applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .batches import send_batch
from .config import PoolConfig
from .errors import (
    ConnectionLost,
    ElectrumError,
    NoServerAvailable,
    RetryableError,
    ServerError,
)
from .host import Candidates
from .selection import ServerSet
from .snapshot import PoolSnapshot
from .states import PoolState, ServerState
from .subscriptions import HeaderSubscription, ScripthashSubscription, Subscriptions
from .upstream import Upstream
from .urls import parse_servers
from .validate import address_to_scripthash, validate_txid

__all__ = ["PoolState", "ServerPool"]

logger = logging.getLogger(__name__)


class ServerPool:
    """A pool of Electrum servers; use as ``async with ServerPool(servers) as pool``.

    ``servers`` are ``tcp://host:port`` / ``ssl://host:port`` strings (a list, or one
    comma-separated string). Every other keyword is a ``PoolConfig`` field: growth
    (``burst``, ``grow_every``, ``min_size``, ``surge_in_flight``, ``surge_step``,
    ``max_size``), failover (``max_retries``), batching (``max_chunk``, ``per_server``,
    ``parallel_threshold``), timeouts, back-off, health pings, TLS and protocol settings.

    Nothing connects until the first request. Single requests go round-robin over healthy
    servers; batches are de-duplicated, spread over the least loaded ones and chunked.
    A request failing because of its server (connection lost, timeout, throttling) is
    retried at once on up to ``max_retries`` other servers, and that server is backed off;
    a ``ServerError`` (the server's answer about the request itself) is not retried.

    ``request_on(url, ...)`` asks one named server (e.g. for the headers a server claims to
    have). ``ban(url, reason)`` stops trusting a server that lied (the block producer bans
    one that sent invalid headers): its connection is closed, its subscriptions move to
    other servers (a configured server not yet open replaces it), and it is neither selected
    nor reconnected until the ban ends.

    ``snapshot()`` is the pool now (``PoolSnapshot``; ``stats()`` is its dict). Each
    server's ``ServerSnapshot.state`` is a ``ServerStatus``: ``idle`` (configured, never
    opened), ``connecting``, ``connected``, ``backoff`` (failing or throttling: kept away
    from for ``backoff_s``), ``lagging`` (connected, but its tip is more than
    ``max_lag_blocks`` behind the majority, so it carries no subscriptions), ``banned``
    (for ``banned_s`` more seconds, with ``ban_reason``) and ``closed`` (the pool is
    closed). ``servers_tip()`` is the one "servers' tip" rule.

    The pool is the subscriptions' ``PoolHost`` (``host.py``): the registry asks it for
    servers only through that Protocol.
    """

    def __init__(self, servers: Sequence[str] | str, *, network: str = "mainnet", **limits: Any):
        self.config = PoolConfig(network=network, **limits)
        upstreams = [
            Upstream(
                address, self.config, on_notification=self._on_notification,
                on_change=self._on_change,
            )
            for address in parse_servers(servers)
        ]
        self._servers = ServerSet(upstreams, self.config, check_open=self.check_open)
        self._subs = Subscriptions(self)
        self._state = PoolState.NEW
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> ServerPool:
        if self._state is not PoolState.NEW:
            raise RuntimeError("a ServerPool can be entered only once")
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._servers.start(self._tg)
            self._tg.start_soon(self._health_loop)
            self._tg.start_soon(self._subs.run_mover)
            self._stack = stack.pop_all()
        self._state = PoolState.OPEN
        logger.info(
            "electrum pool ready: %d configured server(s), network %s, limits %s",
            len(self._servers.upstreams), self.config.network, self.config.limits(),
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._state = PoolState.CLOSED
        self._subs.close()
        assert self._tg is not None and self._stack is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._stack.__aexit__(et, e, tb)
        finally:
            logger.info("electrum pool closed")

    # -- requests ----------------------------------------------------------------------
    async def request(self, method: str, *params: Any) -> Any:
        """Send one request and return its result.

        Raises ``ServerError`` for the server's error answer, ``NoServerAvailable`` when
        no server could answer (after retrying on up to ``max_retries`` others)."""
        self.check_open()
        self._servers.grow(1)
        tried: set[Upstream] = set()
        last: BaseException | None = None
        for _attempt in range(self.config.max_retries + 1):
            upstream = await self._servers.acquire(tried, mode="round_robin", cause=last)
            tried.add(upstream)
            try:
                return await upstream.request(method, params)
            except RetryableError as exc:
                logger.debug("%s failed on %s: %s", method, upstream.url, exc)
                last = exc
        raise NoServerAvailable(f"{method} failed on {len(tried)} server(s)") from last

    async def batch(self, calls: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send many requests; one result per call, in the caller's order.

        Duplicate calls are sent once. A call the server answered with an error gets a
        ``ServerError`` instance in its place; the others are unaffected. Raises
        ``NoServerAvailable`` if some calls could not be answered by any server (see
        ``batches.py`` for the spreading, chunking and retries)."""
        self.check_open()
        return await send_batch(self._servers, calls)

    async def request_on(self, url: str, method: str, *params: Any) -> Any:
        """Send one request to the server ``url`` (as configured), with no retry elsewhere:
        for answers only that server can give (the ancestors of a tip it reported).

        ``ValueError`` for a url that is not configured; ``ConnectionLost`` when that server
        is not connected (or is banned or backed off); otherwise as ``request``."""
        self.check_open()
        upstream = self._servers.find(url)
        if not upstream.usable(anyio.current_time()):
            raise ConnectionLost(upstream.url, "not connected, backed off or banned")
        self._servers.requests += 1
        return await upstream.request(method, params)

    def ban(self, url: str, reason: str, seconds: float = 3600.0) -> None:
        """Stop using the server ``url`` for ``seconds``: close its connection, move its
        header and scripthash subscriptions to other servers (opening a configured one not
        yet open, if any, in its place), and neither select nor reconnect it until the ban
        ends. ``ValueError`` for a url that is not configured."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        upstream = self._servers.find(url)
        now = anyio.current_time()
        upstream.ban(reason, now + seconds)
        logger.warning("banning %s for %.0fs: %s", upstream.url, seconds, reason)
        # Orphan now, not when the connection has gone, so nothing more it says is routed.
        self._subs.on_lost(upstream)
        if upstream.session is not None and self._tg is not None:
            self._tg.start_soon(upstream.close_session)
        active = self._servers.active
        if (
            self._state is PoolState.OPEN and upstream in active
            and len(active) < self.config.max_size
        ):
            # It is gone for long: open a replacement for its subscriptions and requests.
            self._servers.activate_next()
        self._servers.changed()

    # -- typed helpers -------------------------------------------------------------------
    async def get_transactions_batch(self, txids: Iterable[str]) -> list[str | ServerError]:
        """Raw transactions (hex) in input order. ``ValueError`` names an invalid txid
        before anything is sent; a transaction the server does not know gets its
        ``ServerError`` in place."""
        checked = [validate_txid(txid) for txid in txids]
        return await self.batch([("blockchain.transaction.get", [txid]) for txid in checked])

    async def get_histories_batch(self, addresses: Iterable[str]) -> list[Any]:
        """``blockchain.scripthash.get_history`` per address, in input order."""
        return await self._per_address("blockchain.scripthash.get_history", addresses)

    async def get_balances_batch(self, addresses: Iterable[str]) -> list[Any]:
        """``blockchain.scripthash.get_balance`` per address (``{"confirmed",
        "unconfirmed"}`` in sats), in input order."""
        return await self._per_address("blockchain.scripthash.get_balance", addresses)

    async def get_utxos_batch(self, addresses: Iterable[str]) -> list[Any]:
        """``blockchain.scripthash.listunspent`` per address, in input order."""
        return await self._per_address("blockchain.scripthash.listunspent", addresses)

    async def _per_address(self, method: str, addresses: Iterable[str]) -> list[Any]:
        network = self.config.network
        scripthashes = [address_to_scripthash(address, network) for address in addresses]
        return await self.batch([(method, [sh]) for sh in scripthashes])

    # -- subscriptions -----------------------------------------------------------------
    def subscribe_headers(self, servers: int | None = None) -> HeaderSubscription:
        """Tip notifications from ``servers`` servers (default ``header_servers``);
        use as ``async with``. See ``stream.electrum.subscriptions``."""
        count = self.config.header_servers if servers is None else servers
        if count < 1:
            raise ValueError(f"servers must be >= 1, got {count}")
        return HeaderSubscription(self._subs, self.config.notification_buffer, count)

    def subscribe_scripthashes(self) -> ScripthashSubscription:
        """A scripthash subscription set; use as ``async with`` and ``add()`` to it.
        See ``stream.electrum.subscriptions``."""
        return ScripthashSubscription(self._subs, self.config.notification_buffer)

    def scripthash(self, address: str) -> str:
        """The Electrum scripthash of an address on the pool's network."""
        return address_to_scripthash(address, self.config.network)

    # -- what the pool shows -------------------------------------------------------------
    def snapshot(self) -> PoolSnapshot:
        """The pool and every configured server now, typed and frozen (memory only)."""
        try:
            now = anyio.current_time()
        except RuntimeError:  # anyio.NoEventLoopError (no loop running)
            # aiorpcx runs on asyncio, whose clock is time.monotonic().
            now = time.monotonic()
        active = self._servers.active
        return PoolSnapshot(
            network=self.config.network,
            state=self._state,
            configured=len(self._servers.upstreams),
            size=len(active),
            connected=sum(1 for u in active if u.state is ServerState.CONNECTED),
            requests=self._servers.requests,
            in_flight=self._servers.in_flight(),
            subscriptions=self._subs.figures(),
            servers=tuple(
                u.snapshot(now, lagging=self._subs.is_lagging(u)) for u in self._servers.upstreams
            ),
        )

    def stats(self) -> dict[str, Any]:
        """``snapshot().to_dict()``: plain figures for /api/v1/stats."""
        return self.snapshot().to_dict()

    def servers_tip(self) -> int | None:
        """The servers' tip: the one rule every user of the pool applies (the lower median
        of the connected servers' heights, so one server ahead, or on a branch the block
        producer rejected, holds nothing up). None while no connected server has a tip."""
        return self.snapshot().servers_tip()

    # -- PoolHost: what the subscriptions may ask (see host.py) -------------------------
    def check_open(self) -> None:
        """``RuntimeError`` unless the pool is open (entered and not yet left)."""
        if self._state is PoolState.NEW:
            raise RuntimeError("ServerPool is not open: use 'async with ServerPool(...)'")
        if self._state is PoolState.CLOSED:
            raise RuntimeError("ServerPool is closed")

    def active_servers(self) -> Sequence[Upstream]:
        """The servers opened so far, in opening order."""
        return tuple(self._servers.active)

    def grow(self, count: int) -> None:
        """Count ``count`` more requests; open servers as the growth policy says."""
        self._servers.grow(count)

    def open_servers(self, count: int) -> None:
        """Open servers until ``count`` are active (at most ``max_size``)."""
        self._servers.open_servers(count)

    async def wait_changed(self) -> None:
        """Return at the next change of a server's state (connected, lost, banned)."""
        await self._servers.wait_changed()

    async def acquire(self, exclude: AbstractSet[Upstream], candidates: Candidates) -> Upstream:
        """The least loaded of ``candidates(exclude)``, waiting as ``request`` does."""
        return await self._servers.acquire(exclude, mode="least_loaded", candidates=candidates)

    # -- events from upstreams -----------------------------------------------------------
    def _on_change(self, upstream: Upstream, lost: bool) -> None:
        self._servers.changed()
        if lost:
            self._subs.on_lost(upstream)
        elif upstream.state is ServerState.CONNECTED:
            self._subs.wake()

    def _on_notification(self, upstream: Upstream, method: str, args: Sequence[Any]) -> None:
        self._subs.on_notification(upstream, method, args)

    # -- health ------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        """Ping servers idle for ``ping_idle_after`` every ``ping_interval``; busy servers
        prove their health by answering."""
        assert self._tg is not None
        while True:
            await anyio.sleep(self.config.ping_interval)
            now = anyio.current_time()
            for upstream in self._servers.active:
                if upstream.usable(now) and now - upstream.last_used >= self.config.ping_idle_after:
                    self._tg.start_soon(self._ping, upstream)

    async def _ping(self, upstream: Upstream) -> None:
        session = upstream.session
        if session is None:
            return
        try:
            await session.request("server.ping", [], time_limit=self.config.request_timeout)
        except ElectrumError as exc:
            logger.info("ping to %s failed (%s): reconnecting", upstream.url, exc)
            upstream.failures += 1
            upstream.penalize(anyio.current_time())
            await upstream.close_session()
