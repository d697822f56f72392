"""A small TCP proxy that delays every chunk by a fixed time in each direction.

Public Electrum servers are 20-100 ms away; loopback ElectrumX is not. Putting this in
front of a test server makes round trips cost what they cost in production, so batching
and fan-out can be measured (bench) and failures can be provoked mid-request (tests).
"""

from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

__all__ = ["DelayProxy"]

logger = logging.getLogger(__name__)


class DelayProxy:
    """``async with DelayProxy(host, port, delay=0.05) as proxy``: listens on
    ``127.0.0.1:proxy.port`` and forwards to ``host:port``, adding ``delay`` seconds each
    way. Byte order is kept; closing one side closes the other."""

    def __init__(self, host: str, port: int, *, delay: float = 0.05) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.host, self.target_port, self.delay = host, port, delay
        self.port = 0
        self.connections = 0
        self._tg: TaskGroup | None = None
        self._listener: Any = None
        self._conn_scopes: set[anyio.CancelScope] = set()

    async def __aenter__(self) -> DelayProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        self._listener = listener
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, self._handle)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(et, e, tb)
        finally:
            await self._listener.aclose()  # serve() does not close it

    def url(self, scheme: str = "tcp") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def drop_connections(self) -> None:
        """Cut every proxied connection now (as a network failure would)."""
        for scope in list(self._conn_scopes):
            scope.cancel()

    async def _handle(self, client: ByteStream) -> None:
        self.connections += 1
        with anyio.CancelScope() as scope:
            self._conn_scopes.add(scope)
            try:
                async with client:
                    try:
                        server = await anyio.connect_tcp(self.host, self.target_port)
                    except OSError:
                        return
                    async with server, anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, client, server, tg.cancel_scope)
                        tg.start_soon(self._pipe, server, client, tg.cancel_scope)
            finally:
                self._conn_scopes.discard(scope)

    async def _pipe(self, src: ByteStream, dst: ByteStream, scope: anyio.CancelScope) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)

        async def writer() -> None:
            async with receive:
                async for due, data in receive:
                    await anyio.sleep(max(0.0, due - anyio.current_time()))
                    await dst.send(data)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                async with send:
                    async for data in src:
                        await send.send((anyio.current_time() + self.delay, data))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        # One side is done (after its data was delivered): end the whole connection.
        scope.cancel()
