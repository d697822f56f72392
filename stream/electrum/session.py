"""One Electrum server connection: the only place that touches aiorpcx.

aiorpcx is untyped, so it is wrapped thinly here: ``ElectrumSession.open()`` connects
(TCP or TLS, optional certificate pinning), raises the framer's message-size limit and
negotiates the protocol version; ``request()`` / ``batch()`` apply a timeout to every
message and turn aiorpcx's failures into this package's exceptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import aiorpcx
import anyio
from aiorpcx.jsonrpc import CodeMessageError

from .config import PoolConfig
from .errors import (
    EXCESSIVE_RESOURCE_USAGE,
    SERVER_BUSY,
    ConnectionLost,
    RequestTimeout,
    ServerError,
    ServerThrottled,
)
from .urls import ServerAddress

__all__ = ["ElectrumSession", "NotificationHandler", "make_ssl_context"]

logger = logging.getLogger(__name__)

NotificationHandler = Callable[[str, Sequence[Any]], None]

# aiorpcx has its own per-request timeout built on task.cancel(); it is switched off (a
# day) because it does not uncancel the task, which confuses anyio's cancel scopes. Our
# own anyio.fail_after() bounds every request instead.
_AIORPCX_TIMEOUT = 86_400.0


def make_ssl_context(config: PoolConfig) -> ssl.SSLContext:
    """The TLS context for ``ssl://`` servers: the configured one, else a context that
    verifies certificates only when ``tls_verify`` is set (most public Electrum servers use
    self-signed certificates; pinning is the way to trust one)."""
    if config.ssl_context is not None:
        return config.ssl_context
    context = ssl.create_default_context()
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _ClientSession(aiorpcx.RPCSession):  # type: ignore[misc]
    """aiorpcx session that hands server notifications and connection loss to callbacks."""

    sent_request_timeout = _AIORPCX_TIMEOUT

    def __init__(
        self,
        transport: Any,
        *,
        on_notification: NotificationHandler,
        on_lost: Callable[[], None],
    ) -> None:
        super().__init__(transport)
        self._on_notification = on_notification
        self._on_lost = on_lost
        # aiorpcx logs under the class name; keep its chatter under our logger tree.
        self.logger = logging.getLogger(f"{__name__}.aiorpcx")

    async def handle_request(self, request: Any) -> Any:
        if isinstance(request, aiorpcx.Notification):
            # Synchronous on purpose: notifications are delivered in arrival order.
            self._on_notification(request.method, request.args)
            return None
        raise aiorpcx.RPCError(aiorpcx.JSONRPC.METHOD_NOT_FOUND, "client accepts no requests")

    async def connection_lost(self) -> None:
        await super().connection_lost()
        self._on_lost()

    def _recalc_concurrency(self) -> None:
        # The pool does its own load spreading; aiorpcx's adaptive outgoing limit would
        # only log and second-guess it.
        pass


class ElectrumSession:
    """An open, version-negotiated connection to one Electrum server."""

    def __init__(self, address: ServerAddress, config: PoolConfig) -> None:
        self.address = address
        self.config = config
        self.server_version = ""
        self.protocol = ""
        self._session: Any = None
        self._closed = asyncio.Event()

    @classmethod
    async def open(
        cls,
        address: ServerAddress,
        config: PoolConfig,
        on_notification: NotificationHandler,
    ) -> ElectrumSession:
        """Connect, check the pinned certificate if any, and negotiate the protocol.

        Raises ``ConnectionLost`` if the server cannot be reached or negotiated with in
        ``connect_timeout``.
        """
        self = cls(address, config)
        kwargs: dict[str, Any] = {}
        if address.use_tls:
            kwargs["ssl"] = make_ssl_context(config)
            kwargs["server_hostname"] = address.host
        client = aiorpcx.connect_rs(
            address.host,
            address.port,
            framer=aiorpcx.NewlineFramer(max_size=config.max_message_bytes),
            session_factory=lambda transport: _ClientSession(
                transport, on_notification=on_notification, on_lost=self._closed.set
            ),
            **kwargs,
        )
        deadline = anyio.current_time() + config.connect_timeout
        try:
            with anyio.fail_after(config.connect_timeout):
                transport, protocol = await client.create_connection()
        except TimeoutError:
            raise ConnectionLost(address.url, "connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionLost(address.url, f"connect failed: {exc}") from None
        self._session = protocol.session
        try:
            self._check_pin(transport)
            await self._negotiate(max(0.001, deadline - anyio.current_time()))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    def _check_pin(self, transport: asyncio.BaseTransport) -> None:
        pinned = self.config.pinned_certs.get(f"{self.address.host}:{self.address.port}")
        if pinned is None:
            return
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der or hashlib.sha256(der).hexdigest() != pinned:
            raise ConnectionLost(self.address.url, "certificate does not match the pin")

    async def _negotiate(self, time_limit: float) -> None:
        config = self.config
        try:
            result = await self.request(
                "server.version",
                [config.client_name, [config.protocol_min, config.protocol_max]],
                time_limit=time_limit,
            )
        except ServerError as exc:
            raise ConnectionLost(self.address.url, f"version negotiation failed: {exc}") from None
        if not (isinstance(result, list) and len(result) == 2):
            raise ConnectionLost(self.address.url, f"bad server.version reply {result!r}")
        self.server_version, self.protocol = str(result[0]), str(result[1])

    @property
    def is_closing(self) -> bool:
        return self._closed.is_set() or bool(self._session.is_closing())

    async def wait_closed(self) -> None:
        """Return when the connection has gone (closed by either side)."""
        await self._closed.wait()

    async def request(self, method: str, params: Sequence[Any], *, time_limit: float) -> Any:
        """Send one request; its result, or ``ServerError`` / ``ServerThrottled`` /
        ``ConnectionLost`` / ``RequestTimeout``."""
        self._check_open()
        try:
            with anyio.fail_after(time_limit):
                return await self._await_lossy(self._session.send_request(method, list(params)))
        except TimeoutError:
            raise RequestTimeout(
                self.address.url, f"{method} timed out after {time_limit}s"
            ) from None
        except aiorpcx.RPCError as exc:
            raise self._error(exc.code, exc.message) from None
        except aiorpcx.ProtocolError as exc:
            raise ConnectionLost(self.address.url, f"protocol error: {exc.message}") from None

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, time_limit: float
    ) -> list[Any]:
        """Send one JSON-RPC batch. Returns one entry per call, in order: the result or a
        ``ServerError`` instance (``ServerThrottled`` items are returned as such too)."""
        self._check_open()
        try:
            with anyio.fail_after(time_limit):
                batch = self._session.send_batch(raise_errors=False)
                for method, params in calls:
                    batch.add_request(method, list(params))
                await self._await_lossy(batch.__aexit__(None, None, None))
        except TimeoutError:
            raise RequestTimeout(
                self.address.url, f"batch of {len(calls)} timed out after {time_limit}s"
            ) from None
        except aiorpcx.ProtocolError as exc:
            raise ConnectionLost(self.address.url, f"protocol error: {exc.message}") from None
        out: list[Any] = []
        for item in batch.results:
            if isinstance(item, CodeMessageError):
                out.append(self._error(item.code, item.message))
            elif isinstance(item, Exception):
                out.append(ServerError(-1, str(item), self.address.url))
            else:
                out.append(item)
        return out

    async def _await_lossy(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except asyncio.CancelledError:
            # aiorpcx cancels the futures of pending requests when the connection drops.
            # That is not a cancellation of *this* task (its cancelling() count is 0):
            # report it as a lost connection instead.
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:
                raise ConnectionLost(self.address.url, "connection lost") from None
            raise

    def _check_open(self) -> None:
        if self.is_closing:
            raise ConnectionLost(self.address.url, "connection closed")

    def _error(self, code: int, message: str) -> ServerError | ServerThrottled:
        if code in (EXCESSIVE_RESOURCE_USAGE, SERVER_BUSY):
            return ServerThrottled(self.address.url, f"{message} ({code})")
        return ServerError(code, message, self.address.url)

    async def close(self) -> None:
        """Close the connection (abort after ``close_timeout``); idempotent."""
        if self._session is None:
            return
        try:
            await self._session.close(force_after=self.config.close_timeout)
        except Exception:  # closing a broken transport must not mask the real error
            logger.debug("error closing %s", self.address.url, exc_info=True)
