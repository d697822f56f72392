"""Stream clients that stay open, from any loopback address (127.0.0.2, ...), as many
clients behind different IPs would connect; for the connection-cap tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.stream.live import Live

__all__ = ["Refused", "StreamClients", "until"]


class Refused:
    """A connection the server turned away: its HTTP status and typed error."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.error = orjson.loads(body)["error"]

    def __repr__(self) -> str:
        return f"Refused({self.status}, {self.error})"


async def until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        while not predicate():
            await anyio.sleep(0.02)


class StreamClients:
    """Opens SSE and WS connections that stay open until ``aclose()``."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.stack = AsyncExitStack()
        self._http: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> StreamClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.stack.aclose()
        self.stack = AsyncExitStack()
        self._http.clear()

    async def _client(self, ip: str) -> httpx.AsyncClient:
        if ip not in self._http:
            # No pool limit and no keep-alive: each stream is its own TCP connection,
            # closed when the stream is.
            transport = httpx.AsyncHTTPTransport(
                local_address=ip,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
            self._http[ip] = await self.stack.enter_async_context(
                httpx.AsyncClient(transport=transport, timeout=10))
        return self._http[ip]

    async def sse(self, ip: str = "127.0.0.1", headers: Mapping[str, str] | None = None,
                  query: str = "") -> httpx.Response | Refused:
        """An open ``/events`` stream (its headers read, its body not), or the refusal."""
        client = await self._client(ip)
        stream = client.stream("GET", f"{self.live.http}/events{query}", headers=headers)
        response = await self.stack.enter_async_context(stream)
        if response.status_code != 200:
            return Refused(response.status_code, await response.aread())
        return response

    async def open_sse(self, ip: str = "127.0.0.1", headers: Mapping[str, str] | None = None,
                       query: str = "") -> httpx.Response:
        response = await self.sse(ip, headers, query)
        assert isinstance(response, httpx.Response), response
        return response

    async def ws(self, ip: str = "127.0.0.1", headers: Mapping[str, str] | None = None,
                 rcvbuf: int | None = None, **options: Any) -> ClientConnection | Refused:
        """An open ``/ws`` connection from ``ip`` (``rcvbuf``: a small socket receive
        buffer, for a client that stops reading), or the refusal."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((ip, 0))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.live.port))
            connection = await connect(self.live.ws, sock=sock,
                                       additional_headers=dict(headers or {}), **options)
        except InvalidStatus as refused:
            sock.close()
            return Refused(refused.response.status_code, refused.response.body)
        except BaseException:
            sock.close()
            raise
        return await self.stack.enter_async_context(connection)

    async def open_ws(self, ip: str = "127.0.0.1", headers: Mapping[str, str] | None = None,
                      **options: Any) -> ClientConnection:
        connection = await self.ws(ip, headers, **options)
        assert isinstance(connection, ClientConnection), connection
        return connection
