"""The client side of ``bench/fanout.py``: many SSE and WebSocket subscribers in one process.

    python -m bench.fanout_client --sse-url http://127.0.0.1:P/events --sse 250 \
        --ws-url ws://127.0.0.1:P/ws --ws 250 [--ws-subscribe] [--ws-deflate]

The clients are raw asyncio protocols (a minimal HTTP/1.1 + chunked + SSE reader, and a
minimal RFC 6455 reader that answers pings), so that a few client processes can take 100k
frames/s on a 2-core machine: a full client library costs several times more per frame than
the servers under test. A frame's latency is its receipt time minus the ``"pub"`` stamp of
its first event, found with ``bytearray.find`` (no JSON parse).

Prints ``ready`` once every connection is established (WS: handshake done, and with
``--ws-subscribe`` Chainwire's ``subscribed`` answer received; SSE: the first message of
the stream received). Then reads commands on stdin: ``window T0 T1`` (epoch seconds: count
frames received in [T0, T1] and histogram their latencies), ``stop`` (print one JSON line
of results and exit).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import zlib
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from bench.fanout_server import raise_fd_limit

PUB = b'"pub":'
BUCKET = 10_000  # latency histogram buckets: 0.1 ms


class Tally:
    """Per-transport figures of one client process."""

    def __init__(self) -> None:
        self.frames = 0  # every batch frame received
        self.window_frames = 0  # received inside the measurement window
        self.hist: Counter[int] = Counter()
        self.connected = 0
        self.closed = 0  # connections lost while the benchmark ran
        self.bytes = 0


class Window:
    start = float("inf")
    end = float("-inf")


def record(tally: Tally, buf: bytearray, start: int, end: int, now: float) -> bool:
    """Count the frame ``buf[start:end]`` if it is a batch; True if it was."""
    i = buf.find(PUB, start, end)
    if i < 0:
        return False
    tally.frames += 1
    if Window.start <= now <= Window.end:
        i += len(PUB)
        j = buf.find(b",", i, end)
        pub = float(buf[i:j])
        tally.window_frames += 1
        tally.hist[int((now - pub) * BUCKET)] += 1
    return True


class _Base(asyncio.Protocol):
    def __init__(self, tally: Tally, request: bytes, ready: asyncio.Future[None]) -> None:
        self.tally = tally
        self.request = request
        self.ready = ready
        self.buf = bytearray()
        self.head_done = False
        self.transport: asyncio.Transport | None = None
        self.stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before ready: {exc}"))
        elif not self.stopping:
            self.tally.closed += 1

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def take_head(self, data: bytes) -> bytes | None:
        """Collect the response head; returns it once complete (the rest stays in buf)."""
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        self.head_done = True
        return head


class SseClient(_Base):
    def __init__(self, tally: Tally, url: str, ready: asyncio.Future[None]) -> None:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode()
        super().__init__(tally, request, ready)
        self.chunked = False
        self.raw = bytearray()  # chunked framing not yet decoded
        self.sep = b""

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.tally.bytes += len(data)
        if not self.head_done:
            head = self.take_head(data)
            if head is None:
                return
            if not head.startswith(b"HTTP/1.1 200"):
                self.fail(f"SSE answered {head[:60]!r}")
                return
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            data = bytes(self.buf)
            self.buf.clear()
        if self.chunked:
            raw = self.raw
            raw += data
            pos = 0
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(raw[pos:eol].split(b";", 1)[0], 16)
                if size == 0:  # the server ended the stream (Chainwire: a slow client)
                    self.ended()
                    break
                if len(raw) < eol + 2 + size + 2:
                    break
                self.buf += raw[eol + 2 : eol + 2 + size]
                pos = eol + 2 + size + 2
            del raw[:pos]
        else:
            self.buf += data
        self.events(now)

    def ended(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.tally.closed += 1
        if self.transport is not None:
            self.transport.close()

    def events(self, now: float) -> None:
        buf = self.buf
        if not self.sep:
            if b"\n" not in buf:
                return
            self.sep = b"\r\n\r\n" if b"\r\n" in buf else b"\n\n"
        sep = self.sep
        pos = 0
        while True:
            end = buf.find(sep, pos)
            if end < 0:
                break
            if not self.ready.done():
                self.ready.set_result(None)
            record(self.tally, buf, pos, end, now)
            pos = end + len(sep)
        del buf[:pos]


class WsClient(_Base):
    def __init__(self, tally: Tally, url: str, ready: asyncio.Future[None], *,
                 subscribe: bool, deflate: bool) -> None:
        parts = urlsplit(url)
        key = base64.b64encode(os.urandom(16)).decode()
        extensions = ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                      if deflate else "")
        request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"{extensions}\r\n").encode()
        super().__init__(tally, request, ready)
        self.subscribe = subscribe
        self.inflate: Any = None

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        if self.transport is not None:
            self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.tally.bytes += len(data)
        if not self.head_done:
            head = self.take_head(data)
            if head is None:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail(f"WS answered {head[:60]!r}")
                return
            if b"permessage-deflate" in head.lower():
                self.inflate = zlib.decompressobj(wbits=-15)
            if self.subscribe:
                self.send(0x1, b'{"op":"subscribe"}')
            elif not self.ready.done():
                self.ready.set_result(None)
        else:
            self.buf += data
        self.frames(now)

    def frames(self, now: float) -> None:
        buf = self.buf
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode in (0x1, 0x2, 0x0):
                if b0 & 0x40 and self.inflate is not None:  # RSV1: compressed message
                    plain = bytearray(self.inflate.decompress(bytes(buf[start:end])
                                                              + b"\x00\x00\xff\xff"))
                    self.frame(plain, 0, len(plain), now)
                else:
                    self.frame(buf, start, end, now)
            elif opcode == 0x9:  # ping
                self.send(0xA, bytes(buf[start:end]))
            elif opcode == 0x8 and not self.stopping:
                self.stopping = True
                self.tally.closed += 1
                if self.transport is not None:
                    self.transport.close()
            pos = end
        del buf[:pos]

    def frame(self, buf: bytearray, start: int, end: int, now: float) -> None:
        if record(self.tally, buf, start, end, now):
            return
        if not self.ready.done() and buf.find(b'"op":"subscribed"', start, end) >= 0:
            self.ready.set_result(None)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tallies = {"sse": Tally(), "ws": Tally()}
    clients: list[_Base] = []
    gate = asyncio.Semaphore(args.connect_concurrency)

    async def connect(transport: str) -> None:
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            url = args.sse_url if transport == "sse" else args.ws_url
            parts = urlsplit(url)
            protocol: _Base
            if transport == "sse":
                protocol = SseClient(tallies["sse"], url, ready)
            else:
                protocol = WsClient(tallies["ws"], url, ready, subscribe=args.ws_subscribe,
                                    deflate=args.ws_deflate)
            await loop.create_connection(lambda: protocol, parts.hostname, parts.port)
            clients.append(protocol)
            await asyncio.wait_for(ready, 30)
            tallies[transport].connected += 1

    await asyncio.gather(*(connect("sse") for _ in range(args.sse)),
                         *(connect("ws") for _ in range(args.ws)))
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "stop":
            break
        if line[0] == "window":
            Window.start, Window.end = float(line[1]), float(line[2])
    for client in clients:
        client.stopping = True
        if client.transport is not None:
            client.transport.abort()
    return {name: {"connected": t.connected, "frames": t.frames,
                   "window_frames": t.window_frames, "closed": t.closed, "bytes": t.bytes,
                   "hist": {str(k): v for k, v in t.hist.items()}}
            for name, t in tallies.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sse-url", default="")
    parser.add_argument("--sse", type=int, default=0, help="SSE connections")
    parser.add_argument("--ws-url", default="")
    parser.add_argument("--ws", type=int, default=0, help="WebSocket connections")
    parser.add_argument("--ws-subscribe", action="store_true",
                        help='send {"op":"subscribe"} and wait for "subscribed" (Chainwire)')
    parser.add_argument("--ws-deflate", action="store_true",
                        help="offer permessage-deflate, as browsers and `websockets` do")
    parser.add_argument("--connect-concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        result = asyncio.run(run(args))
    except (OSError, TimeoutError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise SystemExit(1) from None
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
