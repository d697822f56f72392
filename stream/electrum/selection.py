"""``ServerSet``: the configured servers, the ones opened so far, and choosing one.

Growth (``policy.GrowthPolicy`` decides, this opens), the change signal every waiter
listens to, and ``acquire``: a usable server now, or a bounded wait for one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Literal

import anyio
from anyio.abc import TaskGroup

from .config import PoolConfig
from .errors import NoServerAvailable
from .host import Candidates
from .policy import RoundRobin
from .states import ServerState
from .upstream import Upstream

__all__ = ["ServerSet"]

logger = logging.getLogger(__name__)


class ServerSet:
    """The pool's servers. ``start(tg)`` gives it the task group servers run in."""

    def __init__(
        self, upstreams: Iterable[Upstream], config: PoolConfig, *,
        check_open: Callable[[], None],
    ) -> None:
        self.config = config
        self.upstreams: tuple[Upstream, ...] = tuple(upstreams)
        # Opened servers, in opening order (the pool never shrinks).
        self.active: list[Upstream] = []
        # JSON-RPC requests since start (a batch counts each de-duplicated call).
        self.requests = 0
        self._growth = config.growth()
        self._rr = RoundRobin()
        self._changed = anyio.Event()
        self._check_open = check_open
        self._tg: TaskGroup | None = None

    def start(self, tg: TaskGroup) -> None:
        self._tg = tg

    def find(self, url: str) -> Upstream:
        for upstream in self.upstreams:
            if upstream.url == url:
                return upstream
        raise ValueError(f"{url!r} is not a configured server")

    def usable(self, exclude: AbstractSet[Upstream] = frozenset()) -> list[Upstream]:
        """Active servers usable now and not in ``exclude``, in opening order."""
        now = anyio.current_time()
        return [u for u in self.active if u.usable(now) and u not in exclude]

    def in_flight(self) -> int:
        return sum(u.in_flight for u in self.active)

    # -- the change signal ---------------------------------------------------------------
    def changed(self) -> None:
        """Wake every ``wait_changed`` (a server connected, went, or was banned)."""
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    # -- growth ----------------------------------------------------------------------------
    def grow(self, count: int) -> None:
        self.requests += count
        target = self._growth.target(
            requests=self.requests,
            in_flight=self.in_flight() + count,
            size=len(self.active),
            available=len(self.upstreams),
        )
        while len(self.active) < target and self.activate_next():
            pass

    def open_servers(self, count: int) -> None:
        while len(self.active) < min(count, self.config.max_size) and self.activate_next():
            pass

    def activate_next(self, exclude: Iterable[Upstream] = ()) -> bool:
        """Open the first configured server never opened (not excluded, not banned)."""
        excluded = set(exclude)
        now = anyio.current_time()
        for upstream in self.upstreams:
            if (
                upstream.state is ServerState.IDLE and upstream not in excluded
                and not upstream.banned(now)
            ):
                self._activate(upstream)
                return True
        return False

    def _activate(self, upstream: Upstream) -> None:
        assert self._tg is not None
        self.active.append(upstream)
        logger.info("opening %s (pool size %d)", upstream.url, len(self.active))
        upstream.state = ServerState.CONNECTING
        self._tg.start_soon(upstream.run)

    # -- selection -------------------------------------------------------------------------
    async def acquire(
        self,
        exclude: AbstractSet[Upstream],
        *,
        mode: Literal["round_robin", "least_loaded"] = "least_loaded",
        candidates: Candidates | None = None,
        cause: BaseException | None = None,
    ) -> Upstream:
        """A server of ``candidates(exclude)`` (default: the usable ones). While there is
        none it waits for servers that are connecting (each bounded by
        ``connect_timeout``), opening a spare when none is on its way; it gives up when
        nothing is connecting and nothing became usable within ``connect_timeout``, or
        after ``request_timeout`` in all."""
        start = anyio.current_time()
        while True:
            self._check_open()
            now = anyio.current_time()
            found: Sequence[Upstream] = (
                self.usable(exclude) if candidates is None else candidates(exclude)
            )
            if found:
                return self._pick(found, mode)
            if all(u in exclude for u in self.upstreams):
                raise NoServerAvailable("every configured server failed") from cause
            others = [u for u in self.active if u not in exclude]
            connecting = any(u.state is ServerState.CONNECTING for u in others)
            if not connecting and len(self.active) < self.config.max_size:
                # Nothing is on its way: open a spare (a replacement for the failed ones).
                connecting = self.activate_next(exclude)
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
                await self.wait_changed()

    def _pick(
        self, found: Sequence[Upstream], mode: Literal["round_robin", "least_loaded"]
    ) -> Upstream:
        if mode == "round_robin":
            choice = self._rr.pick(found)
            assert choice is not None
            return choice
        return min(found, key=lambda u: u.in_flight)
