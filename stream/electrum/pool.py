"""``ServerPool``: a lazy, growing, load-spreading, failing-over pool of Electrum servers.

The one entry point to the Electrum network for the rest of Chainwire. See the package
docstring for the public API and ``policy.py`` / ``batching.py`` for the pure rules it
applies.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from .batching import chunk, dedupe, expand, spread
from .config import PoolConfig
from .errors import (
    ConnectionLost,
    ElectrumError,
    NoServerAvailable,
    RetryableError,
    ServerError,
    ServerThrottled,
)
from .policy import GrowthPolicy, RoundRobin, majority_tip
from .subscriptions import HeaderSubscription, ScripthashSubscription, Subscriptions
from .upstream import ServerState, Upstream
from .urls import parse_servers
from .validate import address_to_scripthash, validate_txid

__all__ = ["PoolState", "ServerPool"]

logger = logging.getLogger(__name__)

Call = tuple[str, Sequence[Any]]
_MISSING: Any = object()
# ElectrumX/aiorpcx answer this (per item) when a batch's response would exceed MAX_SEND.
_TOO_LARGE = "response too large"


class PoolState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


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

    ``stats()["servers"][i]["state"]`` is one of: ``idle`` (configured, never opened),
    ``connecting``, ``connected``, ``backoff`` (failing or throttling: kept away from for
    ``backoff_s``), ``lagging`` (connected, but its tip is more than ``max_lag_blocks``
    behind the majority, so it carries no subscriptions), ``banned`` (for ``banned_s``
    more seconds, with ``ban_reason``) and ``closed`` (the pool is closed).
    """

    def __init__(self, servers: Sequence[str] | str, *, network: str = "mainnet", **limits: Any):
        self.config = PoolConfig(network=network, **limits)
        self._growth: GrowthPolicy = self.config.growth()
        self._upstreams = [
            Upstream(
                address, self.config, on_notification=self._on_notification,
                on_change=self._on_change,
            )
            for address in parse_servers(servers)
        ]
        self._active: list[Upstream] = []
        self._rr = RoundRobin()
        self._request_count = 0
        self._changed = anyio.Event()
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
            self._tg.start_soon(self._health_loop)
            self._tg.start_soon(self._subs.run_mover)
            self._stack = stack.pop_all()
        self._state = PoolState.OPEN
        logger.info(
            "electrum pool ready: %d configured server(s), network %s, limits %s",
            len(self._upstreams), self.config.network, self.config.limits(),
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

    def _check_open(self) -> None:
        if self._state is PoolState.NEW:
            raise RuntimeError("ServerPool is not open: use 'async with ServerPool(...)'")
        if self._state is PoolState.CLOSED:
            raise RuntimeError("ServerPool is closed")

    # -- requests ----------------------------------------------------------------------
    async def request(self, method: str, *params: Any) -> Any:
        """Send one request and return its result.

        Raises ``ServerError`` for the server's error answer, ``NoServerAvailable`` when
        no server could answer (after retrying on up to ``max_retries`` others)."""
        self._check_open()
        self._grow(1)
        tried: set[Upstream] = set()
        last: BaseException | None = None
        for _attempt in range(self.config.max_retries + 1):
            upstream = await self._acquire(tried, mode="round_robin", cause=last)
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
        ``NoServerAvailable`` if some calls could not be answered by any server."""
        self._check_open()
        normalized: list[Call] = [(method, list(params)) for method, params in calls]
        if not normalized:
            return []
        dedup = dedupe([(m, json.dumps(p, sort_keys=True)) for m, p in normalized])
        first: dict[int, int] = {}
        for index, position in enumerate(dedup.positions):
            first.setdefault(position, index)
        unique = [normalized[first[i]] for i in range(len(dedup.unique))]
        self._grow(len(unique))
        results: list[Any] = [_MISSING] * len(unique)
        servers = await self._servers_for_batch(len(unique))
        groups = spread(
            len(unique), len(servers), per_server=self.config.per_server,
            threshold=self.config.parallel_threshold,
        )
        failures: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            for group, upstream in zip(groups, servers, strict=False):
                for indices in chunk(group, self.config.max_chunk):
                    tg.start_soon(self._run_chunk, indices, upstream, unique, results, failures)
        if failures:
            raise failures[0]
        return expand(dedup, results)

    async def _servers_for_batch(self, count: int) -> list[Upstream]:
        """Usable servers, least loaded first. Waits for one if none is connected, and up
        to ``spread_wait`` for servers still connecting when the batch would use them."""
        await self._acquire(set(), mode="least_loaded")
        wanted = len(spread(
            count, len(self._active), per_server=self.config.per_server,
            threshold=self.config.parallel_threshold,
        ))
        with anyio.move_on_after(self.config.spread_wait):
            while True:
                now = anyio.current_time()
                usable = [u for u in self._active if u.usable(now)]
                connecting = sum(1 for u in self._active if u.state is ServerState.CONNECTING)
                if len(usable) >= wanted or not connecting:
                    break
                await self._changed.wait()
        now = anyio.current_time()
        return sorted((u for u in self._active if u.usable(now)), key=lambda u: u.in_flight)

    async def _run_chunk(
        self,
        indices: list[int],
        upstream: Upstream | None,
        calls: list[Call],
        results: list[Any],
        failures: list[BaseException],
    ) -> None:
        """Send one chunk, retrying the calls that failed because of their server on other
        servers (up to max_retries); per-call errors stay with their call."""
        try:
            await self._send_chunk(indices, upstream, calls, results)
        except NoServerAvailable as exc:
            failures.append(exc)

    async def _send_chunk(
        self, indices: list[int], upstream: Upstream | None, calls: list[Call],
        results: list[Any],
    ) -> None:
        pending = indices
        tried: set[Upstream] = set()
        last: BaseException | None = None
        attempts = 0
        while pending:
            if upstream is None:
                if attempts > self.config.max_retries:
                    raise NoServerAvailable(
                        f"{len(pending)} call(s) of a batch failed on {len(tried)} server(s)"
                    ) from last
                upstream = await self._acquire(tried, mode="least_loaded", cause=last)
            tried.add(upstream)
            try:
                out = await upstream.batch([calls[i] for i in pending])
            except RetryableError as exc:
                logger.debug("batch chunk failed on %s: %s", upstream.url, exc)
                last, upstream, attempts = exc, None, attempts + 1
                continue
            retry: list[int] = []
            too_large: list[int] = []
            for index, item in zip(pending, out, strict=True):
                if isinstance(item, ServerThrottled):
                    retry.append(index)
                    last = item
                elif (
                    isinstance(item, ServerError) and _TOO_LARGE in item.message
                    and len(pending) > 1
                ):
                    too_large.append(index)
                else:
                    results[index] = item
            if too_large:
                # The answer was over the server's MAX_SEND: ask again in halves.
                half = max(1, len(pending) // 2)
                for part in chunk(too_large, half):
                    await self._send_chunk(part, upstream, calls, results)
            if retry:
                upstream.penalize(anyio.current_time())
                upstream, attempts = None, attempts + 1
            pending = retry

    async def request_on(self, url: str, method: str, *params: Any) -> Any:
        """Send one request to the server ``url`` (as configured), with no retry elsewhere:
        for answers only that server can give (the ancestors of a tip it reported).

        ``ValueError`` for a url that is not configured; ``ConnectionLost`` when that server
        is not connected (or is banned or backed off); otherwise as ``request``."""
        self._check_open()
        upstream = self._upstream(url)
        if not upstream.usable(anyio.current_time()):
            raise ConnectionLost(upstream.url, "not connected, backed off or banned")
        self._request_count += 1
        return await upstream.request(method, params)

    def ban(self, url: str, reason: str, seconds: float = 3600.0) -> None:
        """Stop using the server ``url`` for ``seconds``: close its connection, move its
        header and scripthash subscriptions to other servers (opening a configured one not
        yet open, if any, in its place), and neither select nor reconnect it until the ban
        ends. ``ValueError`` for a url that is not configured."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        upstream = self._upstream(url)
        now = anyio.current_time()
        upstream.ban(reason, now + seconds)
        logger.warning("banning %s for %.0fs: %s", upstream.url, seconds, reason)
        # Orphan now, not when the connection has gone, so nothing more it says is routed.
        self._subs.on_lost(upstream)
        if upstream.session is not None and self._tg is not None:
            self._tg.start_soon(upstream.close_session)
        if (
            self._state is PoolState.OPEN and upstream in self._active
            and len(self._active) < self.config.max_size
        ):
            # It is gone for long: open a replacement for its subscriptions and requests.
            self._activate_next()
        self._changed.set()
        self._changed = anyio.Event()

    def _upstream(self, url: str) -> Upstream:
        for upstream in self._upstreams:
            if upstream.url == url:
                return upstream
        raise ValueError(f"{url!r} is not a configured server")

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

    # -- stats -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Plain figures for /api/v1/stats and Prometheus."""
        try:
            now = anyio.current_time()
        except RuntimeError:  # anyio.NoEventLoopError (no loop running)
            # aiorpcx runs on asyncio, whose clock is time.monotonic().
            now = time.monotonic()
        return {
            "network": self.config.network,
            "state": self._state.value,
            "configured": len(self._upstreams),
            "size": len(self._active),
            "connected": sum(1 for u in self._active if u.state is ServerState.CONNECTED),
            "requests": self._request_count,
            "in_flight": sum(u.in_flight for u in self._active),
            "subscriptions": {
                "scripthashes": len(self._subs.carriers),
                "moving": len(self._subs.orphans),
                "header_subscriptions": len(self._subs.headers),
            },
            "servers": [
                u.stats(now, lagging=self._subs.is_lagging(u)) for u in self._upstreams
            ],
        }

    def servers_tip(self) -> int | None:
        """The servers' tip: the one rule every user of the pool applies (the lower median
        of the connected servers' heights, so one server ahead, or on a branch the block
        producer rejected, holds nothing up). None while no connected server has a tip."""
        return majority_tip(
            s["height"] for s in self.stats()["servers"]
            if s["state"] == "connected" and isinstance(s["height"], int)
        )

    # -- growth and selection -----------------------------------------------------------
    def _grow(self, count: int) -> None:
        self._request_count += count
        target = self._growth.target(
            requests=self._request_count,
            in_flight=sum(u.in_flight for u in self._active) + count,
            size=len(self._active),
            available=len(self._upstreams),
        )
        while len(self._active) < target and self._activate_next():
            pass

    def _activate_next(self, exclude: Iterable[Upstream] = ()) -> bool:
        excluded = set(exclude)
        now = anyio.current_time()
        for upstream in self._upstreams:
            if (
                upstream.state is ServerState.IDLE and upstream not in excluded
                and not upstream.banned(now)
            ):
                self._activate(upstream)
                return True
        return False

    def _activate(self, upstream: Upstream) -> None:
        assert self._tg is not None
        self._active.append(upstream)
        logger.info("opening %s (pool size %d)", upstream.url, len(self._active))
        upstream.state = ServerState.CONNECTING
        self._tg.start_soon(upstream.run)

    async def _ensure_servers(self, count: int) -> None:
        """Open servers until ``count`` are active, then wait (up to connect_timeout) for
        that many to be usable."""
        while len(self._active) < min(count, self.config.max_size) and self._activate_next():
            pass
        with anyio.move_on_after(self.config.connect_timeout):
            while len(self._subs.candidates()) < min(count, len(self._active)):
                await self._changed.wait()

    async def _acquire(
        self,
        exclude: set[Upstream],
        *,
        mode: Literal["round_robin", "least_loaded"] = "least_loaded",
        for_subscription: bool = False,
        cause: BaseException | None = None,
    ) -> Upstream:
        """A usable server not in ``exclude``. While none is usable it waits for servers
        that are connecting (each bounded by ``connect_timeout``), opening a spare when
        none is on its way; it gives up when nothing is connecting and nothing became
        usable within ``connect_timeout``, or after ``request_timeout`` in all."""
        start = anyio.current_time()
        while True:
            self._check_open()
            now = anyio.current_time()
            if for_subscription:
                candidates = self._subs.candidates(exclude)
            else:
                candidates = [u for u in self._active if u.usable(now) and u not in exclude]
            if candidates:
                if mode == "round_robin":
                    choice = self._rr.pick(candidates)
                    assert choice is not None
                    return choice
                return min(candidates, key=lambda u: u.in_flight)
            if all(u in exclude for u in self._upstreams):
                raise NoServerAvailable("every configured server failed") from cause
            others = [u for u in self._active if u not in exclude]
            connecting = any(u.state is ServerState.CONNECTING for u in others)
            if not connecting and len(self._active) < self.config.max_size:
                # Nothing is on its way: open a spare (a replacement for the failed ones).
                connecting = self._activate_next(exclude)
            waited = now - start
            if waited >= self.config.request_timeout or (
                not connecting and waited >= self.config.connect_timeout
            ):
                raise NoServerAvailable("no Electrum server available") from cause
            wake = self.config.request_timeout - waited
            if not connecting:
                wake = min(wake, self.config.connect_timeout - waited)
            for u in others:
                if u.state is ServerState.CONNECTED and u.backoff_until > now:
                    wake = min(wake, u.backoff_until - now)
            with anyio.move_on_after(wake):
                await self._changed.wait()

    # -- events from upstreams -----------------------------------------------------------
    def _on_change(self, upstream: Upstream, lost: bool) -> None:
        self._changed.set()
        self._changed = anyio.Event()
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
            for upstream in self._active:
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
