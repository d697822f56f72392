"""The one place that wires Chainwire: pool -> store -> hub -> batcher -> producers.

``run_services(settings)`` builds every component, runs the long-lived ones under one
task group, and on exit shuts them down in order:

1. ``begin_shutdown()`` (called by the server before it stops accepting): the hub closes,
   so SSE streams end with a retry hint and WebSocket clients get close 1001;
2. producers stop (no new events);
3. the batcher drains every open window and its retry buffer into the store;
4. the store and the Electrum pool close.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from batcher.retention import RetentionPruner
from batcher.runner import BatcherConfig, BatchRunner
from batcher.store import BatchReader, BatchStore, EventQueries, WatchPage, open_store
from batcher.window import WindowLimits
from stream.electrum import ServerPool
from stream.electrum.validate import canonical_address
from stream.fanout.hub import Hub
from stream.fanout.replays import ReplayGate
from stream.metrics import ChainwireCollector, MeteredSink
from stream.producers.sink import BatcherSink, CommitTracker, TeeSink
from stream.producers.supervisor import Producers
from stream.settings import Settings
from stream.transports.admission import Admission
from stream.transports.ws_watch import WsWatch
from stream.watching import Watching

__all__ = ["Limits", "Services", "run_services"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of the streaming endpoints; each field is the setting of the same name
    (``CHAINWIRE_CLIENT_BUFFER``...), built by ``from_settings``."""

    client_buffer: int = 1000
    client_buffer_bytes: int = 16 * 1024 * 1024
    ws_max_addresses: int = 1000
    sse_max_addresses: int = 1000
    ws_max_message_bytes: int = 64 * 1024
    max_connections_per_ip: int = 100
    max_connections: int = 10_000
    max_replays: int = 8
    ws_max_errors: int = 50
    ws_send_timeout: float = 30.0
    sse_ping_seconds: float = 15.0
    sse_retry_ms: int = 2000
    sse_send_timeout: float = 30.0  # an SSE client that reads nothing this long is reset

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            # Zero addresses per WS connection is a valid policy (streams without watching).
            least = 0 if name == "ws_max_addresses" else 1e-9
            if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The one place settings become limits: every field from its namesake (a field
        with no setting keeps its default; tests/stream/test_admission_rules.py fails
        until it has one)."""
        known = type(settings).model_fields
        return cls(**{name: getattr(settings, name)
                      for name in cls.__dataclass_fields__ if name in known})

    def describe(self) -> str:
        return " ".join(f"{name}={getattr(self, name)}" for name in self.__dataclass_fields__)


@dataclass
class Services:
    """What the endpoints use; built by ``run_services``."""

    settings: Settings
    store: BatchStore
    hub: Hub
    runner: BatchRunner
    pool: ServerPool
    metrics_registry: CollectorRegistry
    producers: Producers
    limits: Limits = field(default_factory=Limits)
    shutting_down: anyio.Event = field(default_factory=anyio.Event)
    lease_clock: Callable[[], float] = time.monotonic
    watching: Watching = field(init=False)

    def __post_init__(self) -> None:
        self.watching = Watching(self.store, self.producers,
                                 max_watched=self.settings.max_watched,
                                 lease_seconds=self.settings.watch_lease_seconds,
                                 clock=self.lease_clock)

    # The endpoints' seams: each reads the store through the narrowest view it needs, so
    # a node that is not the leader can serve them from a follower of the batch log.
    @property
    def batches(self) -> BatchReader:
        """The committed batch log (replay, resume, ``/api/v1/batches``)."""
        return self.store

    @property
    def queries(self) -> EventQueries:
        """Stored events by kind (REST)."""
        return self.store

    async def watched(self) -> list[str]:
        """Every watched address, oldest first."""
        return await self.store.watch_list()

    def canonical_address(self, address: str) -> str:
        return canonical_address(address, self.settings.network)

    async def watched_page(self, after: str | None, limit: int) -> WatchPage:
        """A page of the watch list in byte order of the address, after ``after``."""
        return await self.watching.page(after, limit)

    async def watch(self, addresses: Iterable[str]) -> list[str]:
        """Watch (already canonical) addresses for good (an API call); returns the new
        ones. ``WatchLimitReached`` past ``CHAINWIRE_MAX_WATCHED``: none is added."""
        return await self.watching.watch(addresses)

    async def watch_stream(self, addresses: Iterable[str], *, hold: bool = True) -> list[str]:
        """Watch addresses for a stream subscriber, on a lease; with ``hold`` it holds
        them until ``release``. ``WatchLimitReached`` as ``watch``."""
        return await self.watching.watch_stream(addresses, hold=hold)

    def release(self, addresses: Iterable[str]) -> None:
        """A stream subscriber no longer names ``addresses``: their leases may run."""
        self.watching.release(addresses)

    async def unwatch(self, address: str) -> bool:
        """Stop watching a (canonical) address; False if it was not watched."""
        return await self.watching.unwatch(address)

    def begin_shutdown(self) -> None:
        """Tell every stream to end (first step of the shutdown order)."""
        self.shutting_down.set()
        self.hub.close()

    def stats(self) -> dict[str, Any]:
        return {"pool": self.pool.stats(), "batcher": self.runner.stats(),
                "hub": self.hub.stats(), "producers": self.producers.stats(),
                "watch": self.watching.stats(), "connections": self.admission.stats(),
                "replays": self.replays.stats()}

    # Both built from `limits` on first use: the connection accounting (SSE and WS
    # together) and the replays reading the store at once.
    @cached_property
    def admission(self) -> Admission:
        return Admission(max_per_ip=self.limits.max_connections_per_ip,
                         max_total=self.limits.max_connections)

    @cached_property
    def replays(self) -> ReplayGate:
        return ReplayGate(self.limits.max_replays)

    @cached_property
    def ws_watch(self) -> WsWatch:
        """One watchdog for every WebSocket (stalled sends, the shutdown's goodbyes)."""
        return WsWatch(self.limits.ws_send_timeout, self.shutting_down)

    @property
    def connections_by_ip(self) -> dict[str, int]:
        """Open stream connections (SSE and WS) by client IP."""
        return self.admission.by_ip


#: Blocks and reorgs are rare and urgent, and must reach the store before the address
#: events they cause: they skip the window.
_AT_ONCE = WindowLimits(max_events=1)


def batcher_config(settings: Settings) -> BatcherConfig:
    return BatcherConfig(
        window_events=settings.window_events,
        window_ms=float(settings.window_ms),
        per_type={"block": _AT_ONCE, "reorg": _AT_ONCE},
        batching=settings.batching,
    )


def _warn_if_open(settings: Settings) -> None:
    """Open to the network with no keys: anyone who reaches it can grow the watch list."""
    if settings.api_keys or _is_loopback(settings.host):
        return
    logger.warning("listening on %s with no CHAINWIRE_API_KEYS: anyone who can reach it can "
                   "add to the watch list (up to CHAINWIRE_MAX_WATCHED=%d)",
                   settings.host, settings.max_watched)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


@asynccontextmanager
async def run_services(settings: Settings, limits: Limits | None = None, *,
                       producers: bool = True,
                       lease_clock: Callable[[], float] | None = None,
                       ) -> AsyncIterator[Services]:
    limits = limits or Limits.from_settings(settings)
    logger.info("stream limits: %s", limits.describe())
    store = open_store(settings.database_url)
    hub = Hub(buffer_size=limits.client_buffer, buffer_bytes=limits.client_buffer_bytes)
    registry = CollectorRegistry()
    async with store, ServerPool(settings.effective_servers, network=settings.network) as pool:
        # Nothing is published yet: a stream opened now starts at the stored seq, not at 0.
        hub.last_seq = await store.last_seq()
        commits = CommitTracker()
        runner = BatchRunner(store, TeeSink(commits, MeteredSink(hub, registry)),
                             batcher_config(settings))
        chain = Producers(settings, pool, store, BatcherSink(runner, commits))
        services = Services(settings, store, hub, runner, pool, registry, chain, limits,
                            lease_clock=lease_clock or time.monotonic)
        _warn_if_open(settings)
        registry.register(ChainwireCollector(services.stats, pool.snapshot))
        if settings.watch:
            watch = [canonical_address(a, settings.network) for a in settings.watch]
            added = await store.watch_add(watch)  # the producers load the list at start
            logger.info("watching %d configured addresses (%d new)", len(watch), len(added))
        await services.watching.load()
        logger.info("watch list: at most %d addresses; %d leased (let go %g s after "
                    "their last subscriber)", settings.max_watched,
                    len(services.watching.leases), settings.watch_lease_seconds)
        pruner = RetentionPruner(store, retention_hours=settings.retention_hours)
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            await tg.start(pruner.run)
            await tg.start(services.watching.run)
            await tg.start(services.ws_watch.run)
            async with anyio.create_task_group() as producing:
                if producers:
                    await producing.start(chain.run)
                try:
                    yield services
                finally:
                    services.begin_shutdown()
                    producing.cancel_scope.cancel()  # no new events from here on
            with anyio.CancelScope(shield=True):
                await runner.aclose()  # drains windows and the retry buffer
            tg.cancel_scope.cancel()
