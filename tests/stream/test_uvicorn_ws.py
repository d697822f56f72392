"""The bulk-writing WebSocket protocol under a real uvicorn, over a real socket: every
frame arrives, in order, and close codes, pings and denials behave as uvicorn's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream.serving import uvicorn_config
from stream.uvicorn_ws import BulkWriteWebSocketProtocol
from tests.server_process import free_port

FRAMES = 300


class WriteCounter:
    """Wraps a transport to count its ``write`` calls (each is a ``send()`` system call)."""

    writes = 0

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WriteCounter.writes += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingBulkWrites(BulkWriteWebSocketProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = WriteCounter(self.transport)  # type: ignore[assignment]


class CountingUvicornWrites(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = WriteCounter(self.transport)  # type: ignore[assignment]


async def burst(websocket: WebSocket) -> None:
    await websocket.accept()
    request = await websocket.receive_text()
    if request == "deny-after-accept":
        return
    for i in range(FRAMES):  # one turn of the loop: no await that suspends
        await websocket.send_text(f"frame {i}")
    await websocket.send_bytes(b"\x00binary")
    await websocket.close(4008, "slow client; resume_from=299")


async def deny(websocket: WebSocket) -> None:
    await websocket.close(1008)  # before accept: an HTTP 403


@asynccontextmanager
async def serving(protocol: type[WebSocketsSansIOProtocol], *,
                  ws_compression: bool = False) -> AsyncIterator[str]:
    app = Starlette(routes=[WebSocketRoute("/burst", burst), WebSocketRoute("/deny", deny)])
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, ws=protocol,
                                           lifespan="off", ws_compression=ws_compression))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", [CountingBulkWrites, CountingUvicornWrites])
async def test_a_burst_of_frames_arrives_whole_in_order_then_the_close_code(
    protocol: type[WebSocketsSansIOProtocol],
) -> None:
    WriteCounter.writes = 0
    async with serving(protocol) as base, connect(f"{base}/burst") as client:
        await client.send("go")
        received = []
        with anyio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(await client.recv())
    assert received == [f"frame {i}" for i in range(FRAMES)] + [b"\x00binary"]
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4008, "slow client; resume_from=299")
    # In bulk: the handshake, then the burst with the close frame behind it (the close
    # path writes what is queued first). uvicorn's own: one write per frame.
    expected_writes = 2 if protocol is CountingBulkWrites else 1 + FRAMES + 1 + 1
    assert WriteCounter.writes == expected_writes


@pytest.mark.anyio
async def test_the_default_config_uses_it_and_denials_and_pings_still_work() -> None:
    config = uvicorn_config(Starlette(), host="127.0.0.1", port=0)
    config.load()
    assert config.ws_protocol_class is BulkWriteWebSocketProtocol
    assert config.ws_per_message_deflate is False
    async with serving(BulkWriteWebSocketProtocol) as base:
        with pytest.raises(InvalidStatus, match="403"):
            async with connect(f"{base}/deny"):
                pass
        async with connect(f"{base}/burst") as client:
            with anyio.fail_after(5):
                await (await client.ping())  # the pong comes back through uvicorn's path
            await client.send("deny-after-accept")
            with anyio.fail_after(5), pytest.raises(ConnectionClosed):
                await client.recv()


@pytest.mark.anyio
@pytest.mark.parametrize("ws_compression", [False, True])
async def test_permessage_deflate_only_when_configured(ws_compression: bool) -> None:
    async with serving(BulkWriteWebSocketProtocol, ws_compression=ws_compression) as base, \
            connect(f"{base}/burst") as client:  # the websockets client offers deflate
        assert bool(client.protocol.extensions) is ws_compression
        await client.send("go")
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            received = [await client.recv() for _ in range(FRAMES)]
            assert received == [f"frame {i}" for i in range(FRAMES)]
            while True:
                await client.recv()

