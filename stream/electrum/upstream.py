"""One configured server inside the pool: its state, counters and reconnect loop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .config import PoolConfig
from .errors import ConnectionLost, ElectrumError, RetryableError, ServerError
from .policy import Backoff
from .session import ElectrumSession
from .snapshot import ServerSnapshot
from .states import ServerState, server_status
from .urls import ServerAddress

__all__ = ["ServerState", "Upstream"]

logger = logging.getLogger(__name__)

HEADERS_METHOD = "blockchain.headers.subscribe"
# Weight of the newest sample in the latency moving average.
_LATENCY_ALPHA = 0.2


class Upstream:
    """A configured server. ``run()`` (started by the pool once the server is wanted)
    keeps it connected, with exponential back-off between attempts."""

    def __init__(
        self,
        address: ServerAddress,
        config: PoolConfig,
        *,
        on_notification: Callable[[Upstream, str, Sequence[Any]], None],
        on_change: Callable[[Upstream, bool], None],
    ) -> None:
        self.address = address
        self.url = address.url
        self._config = config
        self._backoff: Backoff = config.backoff()
        self._on_notification = on_notification
        # on_change(upstream, lost): state changed; lost=True when a connection went away.
        self._on_change = on_change
        self.state = ServerState.IDLE
        self.session: ElectrumSession | None = None
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.latency: float | None = None  # seconds, moving average
        self.backoff_until = 0.0
        self.last_used = 0.0
        self.tip_height: int | None = None
        self.tip_header = ""
        self.connects = 0
        # A ban (see ServerPool.ban): kept out of selection and not reconnected until then.
        self.banned_until = 0.0
        self.ban_reason = ""

    # -- selection -------------------------------------------------------------------
    def usable(self, now: float) -> bool:
        return (
            self.state is ServerState.CONNECTED
            and now >= self.backoff_until
            and self.session is not None
            and not self.session.is_closing
        )

    def banned(self, now: float) -> bool:
        return now < self.banned_until

    def ban(self, reason: str, until: float) -> None:
        """Keep away from this server until ``until``: the back-off covers selection and
        the reconnect loop; the caller closes the connection."""
        self.banned_until = max(self.banned_until, until)
        self.ban_reason = reason
        self.backoff_until = max(self.backoff_until, self.banned_until)

    def penalize(self, now: float) -> None:
        """Keep away from this server for the next back-off delay.

        Failures during a back-off are one episode (a dropped connection fails every
        request in flight at once): only a failure after it ends lengthens the delay."""
        if now < self.backoff_until:
            return
        self.consecutive_failures += 1
        delay = self._backoff.delay(self.consecutive_failures)
        self.backoff_until = max(self.backoff_until, now + delay)
        logger.info(
            "backing off %s for %.1fs (%d consecutive failures)",
            self.url, delay, self.consecutive_failures,
        )

    # -- requests --------------------------------------------------------------------
    async def request(self, method: str, params: Sequence[Any]) -> Any:
        session = self._session_or_raise()
        return await self._accounted(1, session.request(method, params, time_limit=self._timeout))

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        session = self._session_or_raise()
        result: list[Any] = await self._accounted(
            len(calls), session.batch(calls, time_limit=self._timeout)
        )
        return result

    @property
    def _timeout(self) -> float:
        return self._config.request_timeout

    def _session_or_raise(self) -> ElectrumSession:
        session = self.session
        if session is None or session.is_closing:
            raise ConnectionLost(self.url, "not connected")
        return session

    async def _accounted(self, count: int, awaitable: Any) -> Any:
        start = anyio.current_time()
        self.last_used = start
        self.in_flight += count
        try:
            result = await awaitable
        except ServerError:
            self.requests += count  # the server answered: it is healthy
            raise
        except RetryableError:
            self.requests += count
            self.failures += 1
            self.penalize(anyio.current_time())
            raise
        finally:
            self.in_flight -= count
        self.requests += count
        self.consecutive_failures = 0
        elapsed = anyio.current_time() - start
        self.latency = (
            elapsed if self.latency is None
            else (1 - _LATENCY_ALPHA) * self.latency + _LATENCY_ALPHA * elapsed
        )
        return result

    # -- connection loop -------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, wait for the connection to go, back off, reconnect; until cancelled."""
        task_status.started()
        try:
            while True:
                wait = self.backoff_until - anyio.current_time()
                if wait > 0:
                    self._set_state(ServerState.BACKOFF)
                    await anyio.sleep(wait)
                self._set_state(ServerState.CONNECTING)
                try:
                    await self._connect()
                except ElectrumError as exc:
                    self.failures += 1
                    logger.warning("cannot connect to %s: %s", self.url, exc)
                    self.penalize(anyio.current_time())
                    continue
                session = self.session
                assert session is not None
                if self.banned(anyio.current_time()):
                    # Banned while connecting: drop the connection, sit the ban out.
                    self.session = None
                    with anyio.CancelScope(shield=True):
                        await session.close()
                    continue
                self._set_state(ServerState.CONNECTED)
                await session.wait_closed()
                self.session = None
                now = anyio.current_time()
                logger.info("disconnected from %s", self.url)
                if self.backoff_until <= now:
                    # Not already penalized for the failure that closed it.
                    self.failures += 1
                    self.penalize(now)
                self._set_state(ServerState.BACKOFF, lost=True)
        finally:
            session = self.session
            self.session = None
            self.state = ServerState.CLOSED
            if session is not None:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(self._config.close_timeout):
                        await session.close()

    async def _connect(self) -> None:
        # One connect_timeout bounds the whole set-up (TCP, TLS, version, first tip).
        deadline = anyio.current_time() + self._config.connect_timeout
        session = await ElectrumSession.open(self.address, self._config, self._notified)
        try:
            # Every connection follows the tip: it tells the pool which servers lag, and
            # feeds header subscriptions.
            left = max(0.001, deadline - anyio.current_time())
            header = await session.request(HEADERS_METHOD, [], time_limit=left)
            self._set_tip(header)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await session.close()
            raise
        self.session = session
        self.connects += 1
        logger.info(
            "connected to %s (%s, protocol %s, height %s)",
            self.url, session.server_version, session.protocol, self.tip_height,
        )

    def _set_tip(self, header: Any) -> None:
        if isinstance(header, dict) and isinstance(header.get("height"), int):
            self.tip_height = header["height"]
            self.tip_header = str(header.get("hex", ""))

    def _notified(self, method: str, args: Sequence[Any]) -> None:
        if method == HEADERS_METHOD and args:
            self._set_tip(args[0])
        self._on_notification(self, method, args)

    def _set_state(self, state: ServerState, *, lost: bool = False) -> None:
        self.state = state
        self._on_change(self, lost)

    async def close_session(self) -> None:
        """Drop the current connection (the run loop reconnects after back-off)."""
        session = self.session
        if session is not None:
            await session.close()

    def snapshot(self, now: float, *, lagging: bool = False) -> ServerSnapshot:
        """This server at ``now``; ``lagging``: the subscriptions' lag rule excludes it
        now (see ``states.server_status`` for the label)."""
        # A closed pool's server is "closed", and shows no ban.
        banned = self.banned(now) and self.state is not ServerState.CLOSED
        return ServerSnapshot(
            url=self.url,
            state=server_status(
                self.state, banned=banned, backing_off=now < self.backoff_until,
                lagging=lagging,
            ),
            in_flight=self.in_flight,
            requests=self.requests,
            failures=self.failures,
            latency_ms=None if self.latency is None else round(self.latency * 1000, 1),
            height=self.tip_height,
            connects=self.connects,
            backoff_s=round(max(0.0, self.backoff_until - now), 1),
            protocol=self.session.protocol if self.session is not None else None,
            ban_reason=self.ban_reason if banned else None,
            banned_s=round(self.banned_until - now, 1) if banned else 0.0,
        )

    def stats(self, now: float, *, lagging: bool = False) -> dict[str, Any]:
        """``snapshot(now, lagging=...)`` as the plain dict stats show."""
        return self.snapshot(now, lagging=lagging).to_dict()
