"""uvicorn's h11 HTTP protocol, with the edge a server on the internet needs.

uvicorn gives a client all the time it wants to send a request head, so a few hundred
connections that send one header byte now and then (slowloris) hold their sockets for
good. Here a connection whose head is not complete ``header_timeout`` seconds after it
opened (or after its first byte, on a kept-alive connection) is closed: with a typed
408 if it sent part of a head, silently if it sent nothing.

A response whose client stopped reading (sse-starlette's ``SendTimeoutError``) ends
with one WARNING and a reset, not uvicorn's traceback.

Errors of the request head are typed too, ``{"error": {"code", "message"}}`` like every
other error of ours: 400 for a malformed head, 431 for a head over h11's limit (16 KiB,
uvicorn's ``h11_max_incomplete_event_size``) instead of uvicorn's plain-text 400. Such a
response is followed by a *lingering close*: we stop writing (FIN) but keep reading and
discarding what the client still sends, for at most ``linger_seconds``. Closing at once
with its unread bytes in our receive buffer would make the kernel answer with a reset,
and a client still uploading a 1 MiB header would see "connection reset", never the 431.

It relies on uvicorn's ``H11Protocol`` attributes (``conn``, ``transport``, ``client``),
so ``pyproject.toml`` pins uvicorn's minor version; ``tests/stream/test_edge_e2e.py``
checks it over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from http import HTTPStatus
from typing import Any

import h11
import orjson
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from sse_starlette.sse import SendTimeoutError
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["DEFAULT_HEADER_TIMEOUT", "EdgeH11Protocol"]

logger = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0
_HEAD_END = re.compile(rb"\n\r?\n")


class _Connection(h11.Connection):
    """h11's connection, remembering the status its last protocol error suggests (431
    for a head over the size limit), which uvicorn's handler does not pass on."""

    error_status = 400

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            raise


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole ``Connection: close`` response with our JSON error body."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


class EdgeH11Protocol(H11Protocol):
    """h11 with a request-head timeout, typed head errors and a lingering close."""

    #: Seconds a client has to send a whole request head.
    header_timeout = DEFAULT_HEADER_TIMEOUT
    #: After an error response, how long we keep reading (and dropping) the request.
    linger_seconds = 5.0

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = (config.h11_max_incomplete_event_size
                               or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
        self.conn = _Connection(h11.SERVER, self.max_head_bytes)
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False  # an error response went out: only draining now
        self.app = self._reset_on_send_timeout(self.app)

    @classmethod
    def configured(cls, *, header_timeout: float) -> type[EdgeH11Protocol]:
        """This protocol with its own timeout, for ``uvicorn.Config(http=...)`` (a class
        per server, so servers in one process can differ)."""
        if header_timeout <= 0:
            raise ValueError(f"header_timeout must be > 0, got {header_timeout}")
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout})

    def _reset_on_send_timeout(self, app: ASGI3Application) -> ASGI3Application:
        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except SendTimeoutError:
                # An SSE client that stopped reading: with its socket buffers full, neither
                # the rest of the stream nor a clean close would get through. One WARNING
                # (not uvicorn's traceback), and a reset that frees the socket now.
                logger.warning("HTTP client %s stopped reading its stream; connection reset",
                               self.client[0] if self.client else "?")
                if self.cycle is not None:
                    self.cycle.disconnected = True  # nothing more to send: no ERROR line
                self._reset()

        return guarded

    def _reset(self) -> None:
        """Close with a TCP reset: the kernel drops what is still queued for the peer at
        once, instead of trying to deliver it to a client that reads nothing."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # -- the request-head timer -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: drop what the client still sends
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._refuse_too_large()
            return
        super().data_received(data)
        if self._refused or self.transport.is_closing() or not self._ours():
            self._cancel_head_timer()  # closed, or handed over to the WebSocket protocol
        elif self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in: the request is the app's now
        elif self._head_timer is None:
            # The next head on a kept-alive connection: its time counts from its first byte.
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_too_large(self, data: bytes) -> bool:
        # h11 limits only a head still incomplete: one that arrives whole in one read
        # (up to asyncio's 256 KiB) would pass. Checked only when that much has come.
        buffered = self.conn.trailing_data[0]
        if len(buffered) + len(data) <= self.max_head_bytes:
            return False
        # The head's end (h11's rule: a blank line, CR optional) within the limit?
        return _HEAD_END.search(buffered + data, 0, self.max_head_bytes + 3) is None

    def _ours(self) -> bool:
        return self.transport.get_protocol() is self

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if (self.transport.is_closing() or not self._ours()
                or self.conn.their_state is not h11.IDLE):
            return
        peer = self.client[0] if self.client else "?"
        if not self.conn.trailing_data[0]:
            # Nothing sent at all: a browser's spare pre-connection as often as an attack.
            logger.debug("HTTP client %s sent nothing in %g s; closed", peer, self.header_timeout)
            self.transport.close()
            return
        logger.warning("HTTP client %s did not complete its request head in %g s; closed (408)",
                       peer, self.header_timeout)
        self._refused = True
        self.transport.write(error_bytes(
            408, "header_timeout",
            f"the request head was not complete within {self.header_timeout:g} s"))
        self.transport.close()

    # -- errors of the request head -----------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        # Called by uvicorn for any h11 protocol error (its own WARNING for it, without
        # the client, is dropped by stream.logs: this is the one line).
        assert isinstance(self.conn, _Connection)
        if self.conn.error_status == 431:
            self._refuse_too_large()
        else:
            # h11's reason may quote the client's bytes (a key in a target): not logged.
            logger.warning("HTTP client %s sent an invalid HTTP request; answered 400",
                           self.client[0] if self.client else "?")
            self._refuse(error_bytes(400, "bad_request", "invalid HTTP request"))

    def _refuse_too_large(self) -> None:
        logger.warning("HTTP client %s sent a request head over %d bytes; answered 431",
                       self.client[0] if self.client else "?", self.max_head_bytes)
        self._refuse(error_bytes(431, "headers_too_large",
                                 f"the request head is over {self.max_head_bytes} bytes"))

    def _refuse(self, response: bytes) -> None:
        """Send ``response``, then read and drop the rest of the request until the client
        closes or ``linger_seconds`` pass, so it can read the response (see the module)."""
        self._refused = True
        self._cancel_head_timer()
        self.transport.write(response)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.transport.resume_reading()  # uvicorn may have paused it
        self._linger_timer = self.loop.call_later(self.linger_seconds, self.transport.close)
