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
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream.serving import uvicorn_config
from stream.transports.uvicorn_ws import BulkWriteWebSocketProtocol
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


sent_to_stuck: list[int] = []


async def flood(websocket: WebSocket) -> None:
    """Big frames to a client that does not read: back-pressure must stop the app."""
    await websocket.accept()
    for i in range(200):
        await websocket.send_bytes(b"x" * 50_000)
        sent_to_stuck.append(i)


async def trickle(websocket: WebSocket) -> None:
    """Frames, then a pause (the end-of-turn flush), then frames and a return without close."""
    await websocket.accept()
    for i in range(3):
        await websocket.send_text(f"first {i}")
    assert await websocket.receive_text() == "more"
    for i in range(3):
        await websocket.send_text(f"last {i}")


after_uvicorn_closed: list[BaseException] = []


async def oversized(websocket: WebSocket) -> None:
    """uvicorn closes the connection itself on a frame over ``ws_max_size``."""
    await websocket.accept()
    assert (await websocket.receive())["type"] == "websocket.disconnect"
    try:
        await websocket.send_text("too late")
    except Exception as exc:  # what the app sees is the point of the test
        after_uvicorn_closed.append(exc)


async def deny(websocket: WebSocket) -> None:
    await websocket.close(1008)  # before accept: an HTTP 403


@asynccontextmanager
async def serving(protocol: type[WebSocketsSansIOProtocol], *,
                  ws_compression: bool = False, **overrides: Any) -> AsyncIterator[str]:
    app = Starlette(routes=[WebSocketRoute("/burst", burst), WebSocketRoute("/deny", deny),
                            WebSocketRoute("/flood", flood), WebSocketRoute("/trickle", trickle),
                            WebSocketRoute("/oversized", oversized)])
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, ws=protocol,
                                           lifespan="off", ws_compression=ws_compression,
                                           **overrides))
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


@pytest.mark.anyio
async def test_frames_before_a_pause_and_before_the_app_returns_are_all_sent() -> None:
    async with serving(BulkWriteWebSocketProtocol) as base, \
            connect(f"{base}/trickle") as client:
        with anyio.fail_after(5):
            assert [await client.recv() for _ in range(3)] == [f"first {i}" for i in range(3)]
            await client.send("more")
            assert [await client.recv() for _ in range(3)] == [f"last {i}" for i in range(3)]


@pytest.mark.anyio
async def test_a_client_that_does_not_read_stops_the_sender() -> None:
    sent_to_stuck.clear()
    async with serving(BulkWriteWebSocketProtocol) as base, \
            connect(f"{base}/flood", max_queue=1) as stuck:
        await anyio.sleep(1.5)
        # Socket buffers take a few MB at most; the rest must wait, not pile up in memory.
        assert 0 < len(sent_to_stuck) < 200
        received = 0
        with anyio.fail_after(20):
            while received < 200:
                assert len(await stuck.recv()) == 50_000
                received += 1
    assert len(sent_to_stuck) == 200


@pytest.mark.anyio
async def test_a_send_after_uvicorn_closed_on_its_own_is_a_gone_peer_not_a_misuse() -> None:
    # uvicorn's own protocol raises a RuntimeError here, the type Starlette uses for
    # misuse: the WS endpoint could only tell "gone" from "bug" by swallowing both.
    after_uvicorn_closed.clear()
    async with serving(BulkWriteWebSocketProtocol, ws_max_size=1024) as base, \
            connect(f"{base}/oversized") as client:
        await client.send("x" * 2000)
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with anyio.fail_after(5):
            while not after_uvicorn_closed:
                await anyio.sleep(0.01)
    [raised] = after_uvicorn_closed
    assert isinstance(raised, WebSocketDisconnect) and raised.code == 1006
