"""How Chainwire runs under uvicorn: one place for ``chainwire serve``, the tests and the
benchmarks, so all three measure and test the same server and the same shutdown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from types import FrameType
from typing import Any

import anyio
import uvicorn
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.types import ASGIApp

from stream.app import end_streams
from stream.logs import AcceptErrorLimiter, install_log_filters
from stream.services import Limits
from stream.transports.uvicorn_http import DEFAULT_HEADER_TIMEOUT, EdgeH11Protocol
from stream.transports.uvicorn_ws import BulkWriteWebSocketProtocol

__all__ = ["STREAM_GOODBYE_SECONDS", "GracefulServer", "uvicorn_config"]

#: How long streams get to say goodbye (WS close 1001, SSE retry hint) at shutdown.
STREAM_GOODBYE_SECONDS = 2.0


#: uvicorn refuses a WebSocket frame over this at its header (close 1009), before it
#: buffers the payload (uvicorn's own default is 16 MiB): the WS message limit.
WS_MAX_MESSAGE_BYTES = Limits().ws_max_message_bytes


def uvicorn_config(app: ASGIApp, *, host: str, port: int, log_level: str = "info",
                   ws_compression: bool = False,
                   header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                   ws_max_message_bytes: int = WS_MAX_MESSAGE_BYTES,
                   trusted_proxies: Sequence[str] = (),
                   **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for Chainwire; ``overrides`` go to ``uvicorn.Config`` as is.

    ``trusted_proxies`` (IPs/CIDRs, ``CHAINWIRE_TRUSTED_PROXIES``): only a peer in them
    may set the client IP with ``X-Forwarded-For``. None by default: uvicorn's own default
    believes 127.0.0.1 (and ``$FORWARDED_ALLOW_IPS``), so any local process could spoof
    its way past the per-IP cap.

    ``ws_compression`` off by default: permessage-deflate compresses every frame once per
    client (each has its own zlib context), which at fan-out scale costs more CPU than
    everything else a delivery does. ``header_timeout``: seconds a client has to send a
    request head (``EdgeH11Protocol``).
    """
    install_log_filters()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,  # keep the process's own logging set-up
        "log_level": log_level,
        "access_log": log_level == "debug",
        "lifespan": "on",
        "http": EdgeH11Protocol.configured(header_timeout=header_timeout),
        "ws": BulkWriteWebSocketProtocol,
        "ws_max_size": ws_max_message_bytes,
        "ws_per_message_deflate": ws_compression,
        "backlog": 4096,
        "server_header": False,  # no "server: uvicorn": nothing to fingerprint
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": list(trusted_proxies),
        **overrides,
    }
    return uvicorn.Config(app, **options)


class GracefulServer(uvicorn.Server):
    """uvicorn's server with Chainwire's shutdown order.

    On exit (SIGINT/SIGTERM, or ``should_exit`` set by a test or the bench): stop
    accepting, end our streams ourselves for at most ``goodbye_seconds`` (uvicorn would
    close every WebSocket with 1012, and SSE clients would get no retry hint), then
    uvicorn's own shutdown: connections, then the lifespan (producers stop, the batcher
    drains into the store, the store and the pool close).
    """

    def __init__(self, config: uvicorn.Config, app: Starlette, *,
                 goodbye_seconds: float = STREAM_GOODBYE_SECONDS) -> None:
        if goodbye_seconds <= 0:
            raise ValueError(f"goodbye_seconds must be > 0, got {goodbye_seconds}")
        super().__init__(config)
        self.app = app
        self.goodbye_seconds = goodbye_seconds
        # We end SSE streams ourselves (with a retry hint) before uvicorn's shutdown;
        # without this, sse-starlette's own signal watcher races us and may cut them first.
        # (A process-wide switch: every server in this process ends its streams this way.)
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises SIGINT/SIGTERM once its graceful shutdown is done, so the
        # process would exit 130/143. A shutdown we completed cleanly exits 0 instead.
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        # Out of file descriptors, asyncio would log a traceback per failed accept().
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(AcceptErrorLimiter(previous))
        try:
            await super().serve(sockets)
        finally:
            loop.set_exception_handler(previous)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in getattr(self, "servers", []):  # set by startup()
            listener.close()
        with anyio.move_on_after(self.goodbye_seconds):
            await end_streams(self.app)
        await super().shutdown(sockets)
