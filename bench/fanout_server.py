"""The server side of ``bench/fanout.py``: one process per system under test.

    python -m bench.fanout_server chainwire --port P --database-url sqlite:////tmp/x.db
    python -m bench.fanout_server limit --ws-port P --sse-port Q
    python -m bench.fanout_server nchan-publisher --port P

Every mode prints ``ready`` on stdout once it listens, then reads commands on stdin:
``go RATE SECONDS`` publishes ``RATE`` batches of 10 events per second for ``SECONDS`` and
prints ``published N`` (N batches); ``quit`` (or EOF) stops the process.

- ``chainwire``: the real app (``create_app`` -> ``run_services``) under uvicorn, configured as
  ``chainwire serve`` configures it; the publisher loop runs in the same event loop and
  enters every event through the batcher (``runner.submit``), so what is measured is
  batcher -> store -> hub -> SSE/WS. The per-IP connection cap is lifted (every bench client
  comes from 127.0.0.1); every other limit keeps its default.
- ``limit``: the least a Python server can do for the same frames: a bare
  ``websockets`` server with ``websockets.broadcast`` (no compression), and a raw asyncio
  HTTP server writing each SSE message once-encoded to every transport (chunked, like
  uvicorn), both in one process and one event loop.
- ``nchan-publisher``: POSTs the same frames to nginx/Nchan's publisher location over one
  keep-alive connection (its CPU is the publisher's, not the server's).

Every event carries ``"pub"`` (``time.time()`` when it was published) as the first field of
its ``data``; a frame's latency is measured from its first event's stamp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from batcher.events import Batch, Event
from stream.fanout.hub import Message

EVENTS_PER_BATCH = 10

_counter = 0


def make_event(now: float) -> Event:
    """An ``address`` event much like a producer's (about 270 bytes of JSON)."""
    global _counter
    _counter += 1
    i = _counter
    address = f"bcrt1q{i % 5000:038x}"
    return Event(
        type="address",
        key=address,
        data={
            "pub": now,
            "address": address,
            "txid": f"{i:064x}",
            "height": 0,
            "status": "mempool",
            "received_sats": 10_000 + i,
            "sent_sats": 0,
            "confirmations": 0,
        },
        ts=now,
        id=uuid.uuid4().hex,
    )


def encode_batch(seq: int) -> Message:
    """A freshly stamped 10-event batch, encoded exactly as Chainwire's hub encodes one."""
    now = time.time()
    events = tuple(make_event(now) for _ in range(EVENTS_PER_BATCH))
    return Message.encode(Batch(seq, "bench-epoch", "address", events, now))


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def paced(rate: float, seconds: float, publish: Callable[[int], Awaitable[None]]) -> int:
    """Call ``publish(i)`` ``rate`` times a second for ``seconds`` on a fixed schedule (late
    ticks are caught up at once, so the offered load stays what was asked)."""
    total = max(1, round(rate * seconds))
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await publish(i)
    return total


async def commands(on_go: Callable[[float, float], Awaitable[int]]) -> None:
    """Serve stdin commands until ``quit`` or EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    tasks: set[asyncio.Task[None]] = set()

    async def go(rate: float, seconds: float) -> None:
        n = await on_go(rate, seconds)
        print(f"published {n}", flush=True)

    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            return
        if line[0] == "go":
            task = asyncio.create_task(go(float(line[1]), float(line[2])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


# -- Chainwire ------------------------------------------------------------------------------


async def run_chainwire(args: argparse.Namespace) -> None:
    from stream.app import create_app
    from stream.services import Limits
    from stream.serving import GracefulServer, uvicorn_config
    from stream.settings import Settings

    settings = Settings(
        network="regtest",
        # Nothing listens there: the pool opens no connection until a request, and the
        # producers' attempts fail fast. Events come from the publisher loop below.
        servers=("tcp://127.0.0.1:9",),
        database_url=args.database_url,
        host="127.0.0.1",
        port=args.port,
        log_level="error",
    )
    app = create_app(settings, Limits(max_connections_per_ip=1_000_000))
    # The production server class: the bench measures the same shutdown as `serve`.
    server = GracefulServer(uvicorn_config(app, host="127.0.0.1", port=args.port,
                                           log_level="error",
                                           ws_compression=args.ws_compression), app)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    runner = app.state.services.runner

    async def publish(i: int) -> None:
        now = time.time()
        for _ in range(EVENTS_PER_BATCH):
            await runner.submit(make_event(now))

    async def on_go(rate: float, seconds: float) -> int:
        return await paced(rate, seconds, publish)

    commanding = asyncio.create_task(commands(on_go))
    try:
        # `quit` (or EOF) ends the commands; a signal ends the server (shut down as
        # `chainwire serve` does): either way the run is over.
        await asyncio.wait({serving, commanding}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        commanding.cancel()
        server.should_exit = True
        await serving


# -- the limit: bare websockets.broadcast + raw SSE ------------------------------------------


class _SseServer(asyncio.Protocol):
    """Answers any request with a never-ending chunked ``text/event-stream``."""

    clients: set[asyncio.Transport]

    def __init__(self, clients: set[asyncio.Transport]) -> None:
        self.clients = clients
        self.transport: asyncio.Transport | None = None
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport in self.clients:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            body = b": limit\r\n\r\n"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"cache-control: no-store\r\ntransfer-encoding: chunked\r\n\r\n"
                + chunk(body)
            )
            self.clients.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.clients.discard(self.transport)


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


async def run_limit(args: argparse.Namespace) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    ws_clients: set[ServerConnection] = set()
    sse_clients: set[asyncio.Transport] = set()
    cut = 0

    async def handler(ws: ServerConnection) -> None:
        ws_clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            ws_clients.discard(ws)

    loop = asyncio.get_running_loop()
    sse_server = await loop.create_server(lambda: _SseServer(sse_clients), "127.0.0.1",
                                          args.sse_port, backlog=4096)
    async with serve(handler, "127.0.0.1", args.ws_port, compression=None, backlog=4096,
                     max_queue=None, ping_interval=None):

        async def publish(i: int) -> None:
            nonlocal cut
            message = encode_batch(i + 1)
            websockets.broadcast(ws_clients, message.ws_text)
            frame = chunk(message.sse_frame)
            for transport in list(sse_clients):
                if transport.get_write_buffer_size() > 4 << 20:
                    transport.abort()  # a client this far behind is cut, as the hub does
                    cut += 1
                else:
                    transport.write(frame)

        async def on_go(rate: float, seconds: float) -> int:
            return await paced(rate, seconds, publish)

        try:
            await commands(on_go)
        finally:
            sse_server.close()
            for transport in list(sse_clients):
                transport.abort()


# -- the Nchan publisher --------------------------------------------------------------------


async def run_nchan_publisher(args: argparse.Namespace) -> None:
    connection: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failures = 0

    async def post(body: bytes) -> bytes:
        if not connection:
            connection.append(await asyncio.open_connection("127.0.0.1", args.port))
        reader, writer = connection[0]
        writer.write(b"POST /pub HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in lines
                       if line.startswith(b"content-length:")), 0)
        if b"transfer-encoding: chunked" in lines:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        elif length:
            await reader.readexactly(length)
        if b"connection: close" in lines:
            connection.pop()[1].close()
        return head.split(b" ", 2)[1]

    async def publish(i: int) -> None:
        nonlocal failures
        try:
            status = await asyncio.wait_for(post(encode_batch(i + 1).ws_text.encode()), 5)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            status = repr(exc).encode()
            if connection:
                connection.pop()[1].close()
        if not status.startswith(b"2"):
            failures += 1
            if failures <= 3:
                print(f"nchan publisher: {status.decode()}", file=sys.stderr, flush=True)

    async def on_go(rate: float, seconds: float) -> int:
        return await paced(rate, seconds, publish) - failures

    await commands(on_go)
    if connection:
        connection[0][1].close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    cw = sub.add_parser("chainwire")
    cw.add_argument("--port", type=int, required=True)
    cw.add_argument("--ws-compression", action="store_true",
                    help="accept permessage-deflate (CHAINWIRE_WS_COMPRESSION=true)")
    cw.add_argument("--database-url", default=None,
                    help="default: a SQLite file in a temporary directory")
    limit = sub.add_parser("limit")
    limit.add_argument("--ws-port", type=int, required=True)
    limit.add_argument("--sse-port", type=int, required=True)
    pub = sub.add_parser("nchan-publisher")
    pub.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    raise_fd_limit()
    with contextlib.ExitStack() as stack:
        if args.mode == "chainwire":
            if args.database_url is None:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-fanout-"))
                args.database_url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
            asyncio.run(run_chainwire(args))
        elif args.mode == "limit":
            asyncio.run(run_limit(args))
        else:
            asyncio.run(run_nchan_publisher(args))


if __name__ == "__main__":
    main()
