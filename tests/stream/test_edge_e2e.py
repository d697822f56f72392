"""The uvicorn edge as an attacker and an operator meet it: the real ``chainwire serve``
(or the production server class in-process) over real sockets.

Slow request heads, oversized heads and WebSocket frames, plain HTTP on ``/ws``, running
out of file descriptors, and what each of those (and other client mistakes) leaves in
the log: no traceback, no API key, at most one WARNING per misbehaving client.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import resource
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from batcher.events import Event
from stream.services import Limits
from stream.serving import uvicorn_config
from stream.web.errors import error_response
from tests.server_process import ChainwireProcess, free_port
from tests.stream.live import in_process

KEY = "k3y-that-must-never-be-logged-7f2c"
HEADER_TIMEOUT = 1.0
# Nothing listens there: the pool fails fast, and nothing here needs Electrum.
NO_ELECTRUM = {"CHAINWIRE_NETWORK": "regtest", "CHAINWIRE_SERVERS": "tcp://127.0.0.1:9"}


def serve(tmp_path: Path, **env: str) -> ChainwireProcess:
    return ChainwireProcess({**NO_ELECTRUM, "CHAINWIRE_API_KEYS": KEY, **env}, cwd=tmp_path)


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainwireProcess]:
    with serve(tmp_path_factory.mktemp("edge"),
               CHAINWIRE_HEADER_TIMEOUT=str(HEADER_TIMEOUT)) as server:
        yield server


# -- raw HTTP / WebSocket helpers -----------------------------------------------------------


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def ws_open(port: int, path: str = f"/ws?key={KEY}", extra: bytes = b"") -> socket.socket:
    """A WebSocket handshake on a plain socket; returns the socket after the 101."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                 b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return sock


def client_frame(opcode: int, payload: bytes, announced: int | None = None) -> bytes:
    """A masked client frame; ``announced`` claims a length other than the payload's."""
    length = len(payload) if announced is None else announced
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(sock: socket.socket) -> int:
    """Read server frames (``hello`` first) until the close frame; return its code."""
    buffer = b""

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("closed without a close frame")
            buffer += chunk
        taken, buffer = buffer[:n], buffer[n:]
        return taken

    while True:
        first, second = need(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", need(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", need(8))
        payload = need(length)
        if first & 0x0F == 0x8:
            return int(struct.unpack("!H", payload[:2])[0])


# -- slow request heads -----------------------------------------------------------------


async def slow_head(port: int, drip: bool) -> tuple[float, bytes]:
    """A client that never finishes its head (``drip``: one header line every 0.2 s,
    else nothing at all); returns when the server closed, and what it answered."""
    started = time.monotonic()
    got = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if drip:
            await stream.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while True:
            with anyio.move_on_after(0.2):
                try:
                    got += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return time.monotonic() - started, got
                continue
            if drip:
                try:
                    await stream.send(b"X-Slow: 1\r\n")
                except (anyio.BrokenResourceError, OSError):
                    return time.monotonic() - started, got


@pytest.mark.anyio
async def test_slow_request_heads_are_closed_after_the_header_timeout_while_others_are_served(
    edge_server: ChainwireProcess,
) -> None:
    results: list[tuple[bool, float, bytes]] = []
    served: list[float] = []

    async def one(drip: bool) -> None:
        results.append((drip, *await slow_head(edge_server.port, drip)))

    async def normal_client() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(6):
                started = time.monotonic()
                response = await client.get(f"{edge_server.url}/")
                assert response.status_code == 200
                served.append(time.monotonic() - started)
                await anyio.sleep(0.2)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for i in range(55):
                tg.start_soon(one, i < 50)  # 50 dripping heads, 5 silent connections
            await anyio.sleep(0.1)
            tg.start_soon(normal_client)
    assert len(served) == 6 and max(served) < 1.0  # served meanwhile, without waiting
    margin = 1.5
    for drip, elapsed, answer in results:
        assert HEADER_TIMEOUT - 0.1 < elapsed < HEADER_TIMEOUT + margin, (drip, elapsed)
        if drip:  # a typed 408; a connection that said nothing is closed silently
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            body = orjson.loads(answer.partition(b"\r\n\r\n")[2])
            assert body["error"]["code"] == "header_timeout"
        else:
            assert answer == b""
    assert sum(drip for drip, _, _ in results) == 50


def test_a_head_in_pieces_within_the_timeout_is_served_and_a_kept_alive_connection_is_timed_too(
    edge_server: ChainwireProcess,
) -> None:
    with closing(socket.create_connection(("127.0.0.1", edge_server.port), timeout=5)) as sock:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(HEADER_TIMEOUT / 4)  # the whole head within the timeout
        head = read_head(sock)
        assert head.split(b"\r\n", 1)[0] in (b"HTTP/1.1 200 OK",
                                             b"HTTP/1.1 503 Service Unavailable")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        body = head.partition(b"\r\n\r\n")[2]
        while len(body) < length:
            body += sock.recv(65536)
        # Kept alive: the next head has the same time limit (uvicorn's keep-alive is 5 s).
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.5


# -- oversized heads, /ws over HTTP ---------------------------------------------------------


def test_a_1_mib_header_gets_a_typed_431_not_a_connection_reset(
    edge_server: ChainwireProcess,
) -> None:
    response = httpx.get(f"{edge_server.url}/healthz", headers={"X-Big": "a" * (1 << 20)},
                         timeout=10)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    # Sent the way a slow link does: the server answers long before the last byte, and
    # must keep reading (a lingering close), or the client's next write meets a reset.
    with closing(socket.create_connection(("127.0.0.1", edge_server.port), timeout=5)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        for _ in range(64):
            sock.sendall(b"a" * 16384)  # ConnectionResetError here is the bug
            time.sleep(0.005)
        sock.sendall(b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431")
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "headers_too_large"


def test_a_small_head_with_a_big_body_in_one_write_is_no_431(
    edge_server: ChainwireProcess,
) -> None:
    body = orjson.dumps({"addresses": ["x" * 40_000]})
    with closing(socket.create_connection(("127.0.0.1", edge_server.port), timeout=5)) as sock:
        sock.sendall(f"POST /api/v1/watch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")  # the app's own answer: not an address
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_address"


def test_a_malformed_request_gets_a_typed_400(edge_server: ChainwireProcess) -> None:
    with closing(socket.create_connection(("127.0.0.1", edge_server.port), timeout=5)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nthis is no header\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "bad_request"


def test_ws_without_upgrade_headers_gets_a_typed_426(edge_server: ChainwireProcess) -> None:
    response = httpx.get(f"{edge_server.url}/ws", params={"key": KEY}, timeout=5)
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    error = response.json()["error"]
    assert error["code"] == "upgrade_required"
    assert "WebSocket" in error["message"]


@pytest.mark.parametrize(("broken", "status"), [
    (b"Sec-WebSocket-Version: 13\r\n", b"400"),  # no Sec-WebSocket-Key
    (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n", b"400"),
])
def test_a_handshake_websockets_refuses_is_answered_in_json(
    edge_server: ChainwireProcess, broken: bytes, status: bytes,
) -> None:
    with closing(socket.create_connection(("127.0.0.1", edge_server.port), timeout=5)) as sock:
        sock.sendall(b"GET /ws?key=" + KEY.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n" + broken + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), head
    assert b"content-type: application/json" in head.lower()
    error = orjson.loads(body)["error"]
    assert error["code"] == "bad_handshake"
    assert "Sec-WebSocket" in error["message"]


# -- oversized WebSocket frames -------------------------------------------------------------


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_an_oversized_ws_frame_is_refused_at_its_header_and_memory_does_not_grow(
    edge_server: ChainwireProcess,
) -> None:
    assert edge_server.proc is not None
    pid = edge_server.proc.pid
    warm = ws_open(edge_server.port)  # the first connection's one-off allocations
    warm.close()
    before = rss_kib(pid)
    clients = []
    try:
        for _ in range(10):
            sock = ws_open(edge_server.port)
            clients.append(sock)
            started = time.monotonic()
            # Announces 15 MiB, sends 16 KiB of it.
            sock.sendall(client_frame(0x2, b"\0" * 16384, announced=15 << 20))
            assert close_code(sock) == 1009
            assert time.monotonic() - started < 2.0  # at once: no 15 MiB to wait for
            # The rest is not taken: the server stopped reading this connection.
            with pytest.raises(OSError):
                for _ in range(256):
                    sock.sendall(b"\0" * 16384)
                    time.sleep(0.001)
        grown = rss_kib(pid) - before
    finally:
        for sock in clients:
            sock.close()
    # uvicorn's default (16 MiB) would have buffered each frame: 10 x 4 MiB sent at least.
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"


# -- out of file descriptors ----------------------------------------------------------------


def test_accept_failures_are_logged_once_per_interval_and_serving_resumes(
    tmp_path: Path,
) -> None:
    # A long head timeout: the connections below must keep their descriptors.
    with serve(tmp_path, CHAINWIRE_HEADER_TIMEOUT="60") as server:
        assert server.proc is not None
        pid = server.proc.pid
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 16, in_use + 16))
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        try:
            # The server can accept no more: a new client is not served.
            with pytest.raises(httpx.TimeoutException):
                httpx.get(f"{server.url}/", timeout=1.0)
            time.sleep(3)
            log = server.log()
        finally:
            for sock in held:
                sock.close()
        # Served again once the connections are gone (asyncio retries accept every 1 s).
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(f"{server.url}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "not served again"
                time.sleep(0.2)
        assert health.json()["status"] in ("ok", "unhealthy")
    reports = [line for line in log.splitlines() if "cannot accept connections" in line]
    assert 1 <= len(reports) <= 3, reports
    assert "WARNING" in reports[0] and "Too many open files" in reports[0]
    assert "Traceback" not in log
    assert "socket.accept() out of system resource" not in log


# -- what client mistakes leave in the log --------------------------------------------------


@pytest.fixture(params=["info", "debug"])
def logged_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChainwireProcess]:
    with serve(tmp_path, CHAINWIRE_LOG_LEVEL=str(request.param)) as server:
        yield server


def warnings_about_clients(log: str) -> list[str]:
    # The pool's own (there is no Electrum server here) are not the clients' doing.
    return [line for line in log.splitlines() if " WARNING " in line
            and not re.search(r"WARNING\s+stream\.(electrum|web\.health)", line)]


@pytest.mark.anyio
async def test_client_mistakes_leave_no_traceback_no_key_and_at_most_one_warning_each(
    logged_server: ChainwireProcess,
) -> None:
    port = logged_server.port
    bearer = f"Authorization: Bearer {KEY}\r\n".encode()
    # Five WS clients hang up before their hello: reset, FIN, at once or after the 101.
    for path, extra in [(f"/ws?key={KEY}", b""), ("/ws", bearer)]:
        sock = ws_open(port, path, extra)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    for _ in range(3):
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(f"GET /ws?key={KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        raw.close()
    # One sends a text frame that is not UTF-8 (one WARNING, close 1007).
    with closing(ws_open(port, "/ws", bearer)) as sock:
        sock.sendall(client_frame(0x1, b"\xff\xfe not utf-8"))
        assert close_code(sock) == 1007
    # Denials: a wrong key (401), and a 101st connection from one IP (429).
    with closing(socket.create_connection(("127.0.0.1", port), timeout=5)) as sock:
        sock.sendall(b"GET /ws?key=wrong-" + KEY.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 401")
    await anyio.sleep(0.5)  # the connections above are gone from the per-IP count
    held = [ws_open(port) for _ in range(Limits().max_connections_per_ip)]
    try:
        with closing(socket.create_connection(("127.0.0.1", port), timeout=5)) as sock:
            sock.sendall(f"GET /ws?key={KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            assert read_head(sock).startswith(b"HTTP/1.1 429")
    finally:
        for sock in held:
            sock.close()
    # A head over the limit and a malformed one: one WARNING each.
    with closing(socket.create_connection(("127.0.0.1", port), timeout=5)) as sock:
        # Whole, in one write: h11 alone would let a head that arrives in one read pass.
        sock.sendall(f"GET /healthz?key={KEY} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode()
                     + b"a" * 65536 + b"\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 431")
    with closing(socket.create_connection(("127.0.0.1", port), timeout=5)) as sock:
        sock.sendall(f"GET /?key={KEY} HTTP/1.1\r\n{KEY}\r\n\r\n".encode())
        assert read_head(sock).startswith(b"HTTP/1.1 400")
    # Keys in query strings and headers of HTTP requests (the access log at debug).
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{logged_server.url}/api/v1/stats",
                                 params={"key": KEY})).status_code == 200
        assert (await client.get(f"{logged_server.url}/api/v1/stats",
                                 headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        async with client.stream("GET", f"{logged_server.url}/events",
                                 params={"key": KEY}) as events:
            assert events.status_code == 200
    await anyio.sleep(0.5)  # the server writes its last lines
    log = logged_server.log()
    assert "Traceback" not in log
    assert " ERROR " not in log
    assert KEY not in log
    warned = warnings_about_clients(log)
    for mistake in ("not UTF-8", "over 16384 bytes; answered 431", "invalid HTTP request"):
        assert len([line for line in warned if mistake in line]) == 1, (mistake, warned)
    assert len(warned) == 3  # hang-ups and denials: no WARNING at all
    per_connection = ("connection open", "connection closed", "connection rejected",
                      '"WebSocket /ws')
    info_lines = [line for line in log.splitlines() if " INFO " in line]
    assert not [line for line in info_lines if any(p in line for p in per_connection)]
    if "CHAINWIRE_LOG_LEVEL=debug" in log:  # they are still there at debug, redacted
        assert "connection open" in log
        assert re.search(r"< authorization: \*\*\*", log, re.IGNORECASE)
        assert "key=***" in log


# -- a non-reading SSE client (in-process: its send timeout shortened) ----------------------


@pytest.mark.anyio
async def test_an_sse_client_that_stops_reading_is_one_warning_and_a_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    async with in_process(tmp_path, Limits(sse_send_timeout=1.0)) as (services, port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.setblocking(False)
        with anyio.fail_after(5):
            while services.hub.stats()["clients"].get("sse", 0) < 1:
                await anyio.sleep(0.02)
        padding = "x" * 50_000  # 200 batches of 50 KB: far more than socket buffers
        for height in range(200):
            await services.runner.submit(Event("block", str(height),
                                               {"height": height, "pad": padding},
                                               ts=time.time()))
        with anyio.fail_after(15):
            while services.hub.stats()["clients"].get("sse", 0) > 0:
                await anyio.sleep(0.1)
        with pytest.raises(ConnectionResetError):  # reset, its socket freed at once
            while True:
                try:
                    if not sock.recv(1 << 20):
                        break
                except BlockingIOError:
                    await anyio.sleep(0.01)
        sock.close()
    records = caplog.records
    assert not [r for r in records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    stalled = [r for r in records if r.levelname == "WARNING" and "stopped reading" in
               r.getMessage()]
    assert len(stalled) == 1


# -- WS denials under uvicorn: no ERROR line ------------------------------------------------


async def deny_by_close(websocket: WebSocket) -> None:
    await websocket.close(1008)  # before accept: uvicorn answers 403


async def deny_by_response(websocket: WebSocket) -> None:
    await websocket.send_denial_response(error_response(429, "too_many_connections", "no"))


@pytest.mark.anyio
async def test_ws_denials_log_no_error_and_no_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    app = Starlette(routes=[WebSocketRoute("/close", deny_by_close),
                            WebSocketRoute("/respond", deny_by_response)])
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        for path, status in [("/close", 403), ("/respond", 429)] * 3:
            with pytest.raises(InvalidStatus) as denied:
                async with connect(f"ws://127.0.0.1:{port}{path}"):
                    pass
            assert denied.value.response.status_code == status
        await anyio.sleep(0.2)
        server.should_exit = True
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.levelno == logging.INFO
                and ("WebSocket" in r.getMessage() or "connection" in r.getMessage())]
