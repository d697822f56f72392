"""Idle streams cost little and keep every behaviour: a real server (the production
server class, in this event loop, SQLite) over real sockets.

The clients here are bare TCP streams (no client library), so every task in the loop
beyond the test's own is the server's: an idle stream's cost is counted in tasks, the
unit that dominated its memory (``bench/idle_memory.py`` measures the kB).
"""

from __future__ import annotations

import asyncio
import base64
import os
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.abc
import pytest

from stream.app import create_app
from stream.services import Limits, Services
from stream.settings import Settings
from tests.server_process import free_port
from tests.stream.live import in_process, serving

Stream = anyio.abc.SocketStream


async def read_until(stream: Stream, buf: bytearray, marker: bytes) -> bytes:
    """Read until ``marker`` is in ``buf``; returns and drops everything up to it."""
    while (end := buf.find(marker)) < 0:
        buf += await stream.receive()
    taken = bytes(buf[: end + len(marker)])
    del buf[: end + len(marker)]
    return taken


async def open_sse(port: int) -> tuple[Stream, bytearray]:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    buf = bytearray()
    assert (await read_until(stream, buf, b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await read_until(stream, buf, b"event: start")  # streaming
    await read_until(stream, buf, b"\r\n\r\n")  # the rest of the start message
    return stream, buf


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (short payloads only)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def open_ws(port: int) -> tuple[Stream, bytearray]:
    """A WebSocket that said subscribe and was answered ``subscribed``."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    await stream.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                      b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    buf = bytearray()
    assert (await read_until(stream, buf, b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    await read_until(stream, buf, b'"op":"hello"')
    await stream.send(ws_frame(b'{"op":"subscribe"}'))
    await read_until(stream, buf, b'"op":"subscribed"')
    return stream, buf


async def settle(services: Services, transport: str, n: int) -> None:
    with anyio.fail_after(10):
        while services.hub.stats()["clients"].get(transport, 0) != n:
            await anyio.sleep(0.01)
    await anyio.sleep(0.1)  # the handlers reach their idle waits


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_an_idle_stream_runs_two_tasks_uvicorns_and_its_feed(
    tmp_path: Path, transport: str,
) -> None:
    # Before: SSE ran five (sse-starlette's body, ping, disconnect and shutdown listeners),
    # WS four (a send watchdog and a shutdown waiter each): a few kB apiece.
    n = 20
    async with in_process(tmp_path, Limits()) as (services, port), AsyncExitStack() as stack:
        await settle(services, transport, 0)
        before = len(asyncio.all_tasks())
        for _ in range(n):
            stream, _ = await (open_sse(port) if transport == "sse" else open_ws(port))
            await stack.enter_async_context(stream)
        await settle(services, transport, n)
        assert len(asyncio.all_tasks()) - before == 2 * n
        assert services.admission.total == n
        if transport == "ws":
            assert len(services.ws_watch) == n  # the one watchdog knows them all


@pytest.mark.anyio
async def test_an_idle_sse_stream_is_pinged_and_its_departure_noticed(tmp_path: Path) -> None:
    async with in_process(tmp_path, Limits(sse_ping_seconds=0.2)) as (services, port):
        stream, buf = await open_sse(port)
        with anyio.fail_after(10):  # nothing else is sent: only the pings come
            for _ in range(3):
                comment = await read_until(stream, buf, b"\r\n\r\n")
                assert comment.lstrip(b"\r\n0123456789abcdef").startswith(b": ping - ")
        await settle(services, "sse", 1)
        assert services.admission.total == 1
        await stream.aclose()  # idle, between pings: the handler's listener sees it go
        await settle(services, "sse", 0)
        with anyio.fail_after(5):
            while services.admission.total:
                await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_idle_streams_still_end_properly_at_shutdown(tmp_path: Path) -> None:
    settings = Settings(network="regtest", servers=("tcp://127.0.0.1:9",),
                        database_url=f"sqlite:///{tmp_path / 'cw.db'}", sse_retry_ms=1234)
    app = create_app(settings, producers=False)
    port = free_port()
    async with serving(app, port) as server:
        sse, sse_buf = await open_sse(port)
        ws, ws_buf = await open_ws(port)
        server.should_exit = True
        with anyio.fail_after(10):
            # SSE: the end comment with its retry hint, then the chunked body's end.
            assert b"retry: 1234" in await read_until(sse, sse_buf, b"0\r\n\r\n")
            close = await read_until(ws, ws_buf, b"server shutting down")
        assert close[close.rfind(b"\x88"):][2:4] == (1001).to_bytes(2, "big")
        await sse.aclose()
        await ws.aclose()
